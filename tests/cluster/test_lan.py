"""Three faasd nodes, each in a network namespace of its own, and a 3-member etcd
cluster (one member beside each node) on a LAN the test builds (tests/lib/lan.py).
Every node lists the three, and the etcd leader dying costs no node its place.
(A node cut off from the LAN: tests/cluster/test_cluster.py.)"""

import json
import time

import pytest

from lib.daemon import Faasd
from lib.etcd import Etcd
from lib.lan import Lan
from lib.vm import make_vm, wait_for

pytestmark = pytest.mark.cluster

TTL = 3


def answer(node):
    return json.loads(node.faas("nodes", "--json", check=True).stdout)


def listed(node):
    return sorted(n["name"] for n in answer(node)["nodes"])


@pytest.fixture
def lan_nodes(request, vm, faasd_unstarted, build_dir, tmp_path):
    """[(vm, faasd, address)] for n1..n3 on one LAN, and their etcd cluster; n1 is the
    test's own faasd fixture (its teardown checks apply), the others are stopped here."""
    lan = Lan(tmp_path / "lan")
    vms = [vm] + [make_vm("sandbox", tmp_path / f"vm{i}") for i in (2, 3)]
    try:
        addresses = [lan.join(v) for v in vms]
        etcd = Etcd(vm, tmp_path / "etcd", placed=list(zip(vms, addresses)))
        runtime = request.config.getoption("--runtime")
        nodes = [faasd_unstarted] + [Faasd(v, build_dir, runtime) for v in vms[1:]]
        for i, (node, address) in enumerate(zip(nodes, addresses), start=1):
            node.start("--cluster", "--etcd", etcd.endpoints, "--node-name", f"n{i}",
                       "--advertise-address", address, "--node-ttl", f"{TTL}s")
        yield lan, etcd, list(zip(vms, nodes, addresses))
        for node in nodes[1:]:
            if node.running():
                assert node.stop() == 0, node.log()[-3000:]
    finally:
        for v in vms[1:]:
            v.close()
        lan.close()


def test_every_node_lists_the_three_and_the_etcd_leader_dying_costs_none(lan_nodes):
    lan, etcd, members = lan_nodes
    for _, node, _ in members:
        wait_for(lambda: listed(node) == ["n1", "n2", "n3"], 15, what="three nodes listed")
    assert [n["address"] for n in answer(members[0][1])["nodes"]] == [a for _, _, a in members]

    leader = etcd.leader()
    etcd.stop(leader)
    # For two TTLs, every node stays listed in what the surviving members hold.
    survivor = next(n for n in etcd.names if n != leader)
    deadline = time.monotonic() + 2 * TTL
    while time.monotonic() < deadline:
        r = etcd.vms[survivor].run(["etcdctl", f"--endpoints={etcd.client[survivor]}",
                                    "--command-timeout=3s", "get", "--prefix", "--keys-only",
                                    "/faasd/nodes/"], check=False)
        if r.returncode == 0:  # (no answer during the election)
            assert sorted(r.stdout.split()) == ["/faasd/nodes/n1", "/faasd/nodes/n2",
                                                "/faasd/nodes/n3"], r.stdout
        time.sleep(0.2)
    for _, node, _ in members:
        assert answer(node)["etcd"] == "ok"
    etcd.restart(leader)
