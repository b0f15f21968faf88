"""faasd --cluster: a node's membership in etcd (a real etcd, started by the test in
its network namespace). The node's key lives under a lease it renews: `faas nodes`
lists it, SIGTERM removes it at once, kill -9 within --node-ttl; a node that loses
etcd keeps serving and says so. A node alone pushes the archives deployed on it to the
cluster's registry (--registry) and writes their spec."""

import json
import time

import pytest

from lib.etcd import Etcd
from lib.helpers import hello_body
from lib.registry import Registry
from lib.vm import wait_for

pytestmark = pytest.mark.cluster


def nodes(faasd):
    r = faasd.faas("nodes", "--json", check=True)
    return json.loads(r.stdout)


def listed(faasd):
    return sorted(n["name"] for n in nodes(faasd)["nodes"])


def test_a_node_announces_itself_lists_others_and_leaves_on_sigterm(faasd_unstarted, tmp_path):
    etcd = Etcd(faasd_unstarted.vm, tmp_path)
    faasd = faasd_unstarted.start("--cluster", "--etcd", etcd.endpoints, "--node-name", "n1",
                                  "--advertise-address", "192.0.2.1", "--node-ttl", "3s")
    wait_for(lambda: nodes(faasd)["etcd"] == "ok", 10, what="n1 announced")
    answer = nodes(faasd)
    assert answer["node"] == "n1"
    assert answer["nodes"] == [{"name": "n1", "address": "192.0.2.1",
                                "version": answer["nodes"][0]["version"], "self": True}]
    key = etcd.get("/faasd/nodes/n1")
    assert key == {"address": "192.0.2.1", "version": answer["nodes"][0]["version"]}

    # Another node (written as faasd writes it, under a lease of its own) is listed at
    # the node's next round.
    lease = etcd.ctl("lease", "grant", "60").stdout.split()[1]
    etcd.ctl("put", "--lease", lease, "/faasd/nodes/n2", json.dumps({"address": "192.0.2.2",
                                                                     "version": "0.1.0"}))
    wait_for(lambda: listed(faasd) == ["n1", "n2"], 10, what="n2 listed by n1")
    table = faasd.faas("nodes", check=True).stdout.splitlines()
    assert table[0].split() == ["Name", "Address", "Version", "State"]
    assert table[1].split()[:2] == ["n1", "192.0.2.1"] and table[1].endswith("up (this node)")
    assert table[2].split()[:2] == ["n2", "192.0.2.2"] and table[2].endswith("up")

    faasd.stop()
    assert etcd.get("/faasd/nodes/n1") is None  # revoked on the way out, not timed out
    assert etcd.get("/faasd/nodes/n2") is not None


def test_a_killed_node_leaves_the_list_within_its_ttl(faasd_unstarted, tmp_path):
    etcd = Etcd(faasd_unstarted.vm, tmp_path)
    faasd = faasd_unstarted.start("--cluster", "--etcd", etcd.endpoints, "--node-name", "n1",
                                  "--node-ttl", "2s")
    wait_for(lambda: etcd.get("/faasd/nodes/n1") is not None, 10, what="n1 announced")
    faasd.kill9()
    killed = time.monotonic()
    wait_for(lambda: etcd.get("/faasd/nodes/n1") is None, 10, what="n1's lease to expire")
    # etcd expires a lease within about its TTL (it keeps at least that long).
    assert time.monotonic() - killed < 8


def test_a_node_that_loses_etcd_keeps_serving_and_comes_back(faas_unstarted, faasd_unstarted,
                                                            tmp_path, anonymous):
    faas = faas_unstarted
    etcd = Etcd(faasd_unstarted.vm, tmp_path)
    registry = Registry(faasd_unstarted.vm, tmp_path / "registry")
    faasd = faasd_unstarted.start("--cluster", "--etcd", etcd.endpoints, "--node-name", "n1",
                                  "--node-ttl", "2s", "--registry", f"{registry.host}/fn",
                                  "--registry-auth", anonymous)
    wait_for(lambda: nodes(faasd)["etcd"] == "ok", 10, what="n1 announced")
    # An archive deployed on a cluster node goes to the cluster's registry, and the
    # spec names it.
    ip = faas.deploy_handler("app").ip
    spec = etcd.get("/faasd/functions/app")
    assert (spec["ip"], spec["version"]) == (ip, 1)
    assert spec["image_ref"] == f"{registry.host}/fn/app:v1"
    assert spec["manifest_digest"] == registry.digest("fn/app:v1")
    assert etcd.get("/faasd/status/app/n1") == {"version": 1, "ready": True}

    etcd.stop("e0")
    wait_for(lambda: nodes(faasd)["etcd"] != "ok", 15, what="n1 to notice etcd is gone")
    r = faasd.faas("nodes", check=True)
    assert r.stderr.startswith("Warning: n1 cannot reach etcd"), r.stderr
    assert "n1" in r.stdout  # the last list it read
    faas.assert_handler_responds(ip, hello_body())

    # Back: the lease expired meanwhile; the node takes a new one and is listed again.
    etcd.restart("e0")
    wait_for(lambda: nodes(faasd)["etcd"] == "ok", 15, what="n1 announced again")
    assert etcd.get("/faasd/nodes/n1") is not None
    # Its report on app is there again too (under the new lease).
    wait_for(lambda: etcd.get("/faasd/status/app/n1") == {"version": 1, "ready": True}, 10,
             what="n1's report on app")
    faas.assert_handler_responds(ip, hello_body())


@pytest.mark.parametrize("args, message", [
    (("--etcd", "http://127.0.0.1:2379"), "--etcd: only with --cluster"),
    (("--cluster",), "--cluster: give etcd's client URLs with --etcd"),
    (("--cluster", "--etcd", "https://127.0.0.1:2379"), "is not http://HOST:PORT"),
    (("--cluster", "--etcd", "http://127.0.0.1"), "is not http://HOST:PORT"),
    (("--cluster", "--etcd", "http://127.0.0.1:2379", "--node-ttl", "1s"),
     "--node-ttl: at least 2s"),
    (("--cluster", "--etcd", "http://127.0.0.1:2379", "--node-name", "Bad Name"),
     "--node-name: "),
    (("--registry", "127.0.0.1:5000/fn"), "--registry: only with --cluster"),
    (("--bird-routes", "/tmp/routes.conf"), "--bird-routes: only with --cluster"),
    (("--cluster", "--etcd", "http://127.0.0.1:2379", "--registry", "Bad Host/x"),
     "--registry: "),
])
def test_bad_cluster_flags_stop_faasd_at_start(faasd_unstarted, args, message):
    r = faasd_unstarted.vm.run(faasd_unstarted.command(*args), check=False)
    assert r.returncode == 2 and message in r.stderr, r


def test_a_cluster_node_refuses_an_archive_without_a_registry_and_a_chosen_address(
        faas_unstarted, faasd_unstarted, tmp_path, images):
    etcd = Etcd(faasd_unstarted.vm, tmp_path)
    faasd = faasd_unstarted.start("--cluster", "--etcd", etcd.endpoints, "--node-name", "n1")
    r = faasd.faas("new", "app", stdin_path=str(images.archive("hello")))
    assert r.returncode == 1 and "--registry HOST/PATH" in r.stderr, r
    r = faasd.faas("new", "app", "--image", "127.0.0.1:5000/x:1", "--ip", "10.0.0.50")
    assert r.returncode == 1 and "a cluster hands out addresses itself" in r.stderr, r
    assert etcd.get("/faasd/functions/app") is None
    assert faasd.faas("list", check=True).stdout.splitlines()[1:] == []


def test_faas_nodes_without_a_cluster(faasd):
    r = faasd.faas("nodes")
    assert r.returncode == 1 and "faasd runs alone" in r.stderr, r
