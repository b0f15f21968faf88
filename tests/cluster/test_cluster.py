"""A faasd cluster end to end (tests/lib/cluster.py): three nodes with their own
state, etcd member and bird2, a bird2 router spreading a client's connections by ECMP,
and the cluster's registry. A function deployed through one node serves from all
three; redeploys, rollbacks and removals converge everywhere; a node that dies loses
its routes and comes back; the etcd leader dying costs deploys a few seconds and
requests nothing; a node cut off keeps serving, allocates nothing and catches up."""

import json
import time

import pytest

from lib.cluster import Cluster, elapsed
from lib.vm import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(request, vm, faasd_unstarted, build_dir, tmp_path, anonymous):
    """n1 is the test's own faasd fixture (its teardown checks apply)."""
    c = Cluster(tmp_path, build_dir, request.config.getoption("--runtime"), anonymous,
                first_vm=vm, first_faasd=faasd_unstarted)
    yield c
    c.close()


def served_by(cluster, function):
    return {name: node.requests_served(function) for name, node in cluster.nodes.items()}


def test_a_deploy_through_one_node_serves_from_all_and_every_change_converges(cluster, images):
    ref = cluster.push_image(images, "hello", "hello:1")
    start = time.monotonic()
    r = cluster.nodes["n1"].faas("new", "web", "--image", ref)
    assert r.returncode == 0, r.stderr
    web = cluster.wait_served("web", 1)
    print(f"\nfaas new --image to ready on three nodes: {elapsed(start)} s")
    ip = web["ip"]
    # Every node knows it, with the same address.
    for node in cluster.nodes.values():
        assert node.faas("ip", "web", check=True).stdout.strip() == ip

    outcomes = cluster.requests(ip, 60)
    assert outcomes == ["ok"] * 60, outcomes
    spread = served_by(cluster, "web")
    print("requests per node:", spread)
    assert sum(spread.values()) == 60 and all(n > 0 for n in spread.values()), spread

    # A redeploy through another node (new settings, same image) converges everywhere.
    r = cluster.nodes["n2"].faas("new", "web", "--image", ref, "--env", "COLOR=blue")
    assert r.returncode == 0, r.stderr
    cluster.wait_served("web", 2)
    for node in cluster.nodes.values():
        assert "COLOR=blue" in json.loads(node.faas("describe", "web").stdout)["env"]
    # A rollback through the third.
    r = cluster.nodes["n3"].faas("rollback", "web")
    assert r.returncode == 0, r.stderr
    cluster.wait_served("web", 1)
    for node in cluster.nodes.values():
        assert "COLOR=blue" not in json.loads(node.faas("describe", "web").stdout)["env"]
    assert cluster.requests(ip, 20) == ["ok"] * 20

    # An archive deployed on n3 is pushed to the cluster's registry and served by all.
    archive = str(images.archive("hello"))
    r = cluster.nodes["n3"].faasd.faas("new", "arc", stdin_path=archive)
    assert r.returncode == 0, r.stderr
    arc = cluster.wait_served("arc", 1)
    assert arc["cluster"]["image_ref"] == f"{cluster.registry.host}/faasd/arc:v1"
    assert arc["ip"] != ip
    assert cluster.requests(arc["ip"], 10) == ["ok"] * 10

    # faas rm through n2: gone from every node and from the router.
    assert cluster.nodes["n2"].faas("rm", "web").returncode == 0
    cluster.router.wait_paths(f"{ip}/32", set(), 15)
    for node in cluster.nodes.values():
        wait_for(lambda: node.faas("describe", "web").returncode != 0, 15,
                 what=f"web gone from {node.name}")
        assert ip not in node.faasd.faas_addresses()
    # The address is free again for the next function.
    assert cluster.nodes["n1"].faas("rm", "arc").returncode == 0
