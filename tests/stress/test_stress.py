"""Load and scale: many requests, many functions, concurrent deploys, redeploys under load."""

import json
import re

import pytest

from lib.helpers import hello_body
from lib.vm import wait_for

pytestmark = pytest.mark.stress


def client_results(spawned, timeout):
    rc = spawned.wait(timeout=timeout)
    assert rc == 0, spawned.stderr_text()
    return json.loads(spawned.stdout_text())["results"]


def failures(results, valid_bodies):
    return [r for r in results
            if not (r["status"] == 200 and r["complete"] and r["body"] in valid_bodies)]


def test_three_handlers_five_concurrent_each(faas, faasd):
    fns = [("h1", "hello", None, {hello_body("GET")}),
           ("e1", "echo", "echo-me", {"echo-me"}),
           ("h2", "hello", None, {hello_body("GET")})]
    ips = {name: faas.deploy_handler(name, handler).ip for name, handler, _, _ in fns}
    clients = []
    for name, _, body, _ in fns:
        argv = ["/usr/bin/python3", faas.client, ips[name], "-n", "5", "-c", "5", "--timeout", "60"]
        if body:
            argv += ["--body", body]
        clients.append(faas.vm.spawn(argv, log_name=f"client-{name}"))
    for (name, _, _, valid), client in zip(fns, clients):
        results = client_results(client, 120)
        assert len(results) == 5
        assert failures(results, valid) == [], name
    faas.wait_for_cleanup(timeout=30)


@pytest.mark.slow
def test_1000_sequential_requests_no_leaks(faas, faasd):
    d = faas.deploy_handler("hello")
    faas.make_requests(d.ip, count=3)
    faas.wait_for_cleanup()
    fds_before = faasd.fd_count()
    results = faas.make_requests(d.ip, count=1000, timeout=30)
    assert len(results) == 1000
    assert failures(results, {hello_body()}) == []
    faas.wait_for_cleanup()
    assert faas.count_bundles() == 0
    assert faasd.runc_containers() == []
    assert faas.get_process_count() == 0
    assert faasd.fd_count() == fds_before


@pytest.mark.slow
def test_30_handlers_deployed_all_answering(faas, faasd):
    deployed = {}
    for i in range(30):
        handler = "echo" if i % 2 else "hello"
        deployed[f"fn{i:02d}"] = (faas.deploy_handler(f"fn{i:02d}", handler).ip, handler)
    ips = [ip for ip, _ in deployed.values()]
    assert ips == [f"10.0.0.{10 + i}" for i in range(30)]
    assert faasd.faas_addresses() == sorted(ips)
    assert sorted(faas.list_handlers()) == sorted(deployed)
    for name, (ip, handler) in deployed.items():
        if handler == "echo":
            faas.assert_handler_responds(ip, expected_body=name, body=name)
        else:
            faas.assert_handler_responds(ip)
    faas.wait_for_cleanup(timeout=30)
    # All of them come back after a restart.
    faasd.restart()
    assert faasd.faas_addresses() == sorted(ips)
    for name, (ip, handler) in deployed.items():
        if handler == "hello":
            faas.assert_handler_responds(ip)


def test_concurrent_deploys_of_10_names_all_land(faas, faasd):
    image = faas.image("hello")
    deploys = [faas.vm.spawn(f"exec {faasd.faas_bin} --socket {faasd.socket} new fn{i} < {image}",
                             log_name=f"deploy-{i}") for i in range(10)]
    for i, p in enumerate(deploys):
        assert p.wait(timeout=120) == 0, p.stderr_text()
        assert p.stdout_text().startswith(f"✓ Deployed fn{i} at 10.0.0.")
    registry = faas.read_registry()
    assert sorted(registry) == [f"fn{i}" for i in range(10)]
    ips = [r["ip"] for r in registry.values()]
    assert len(set(ips)) == 10
    assert faasd.faas_addresses() == sorted(ips, key=lambda ip: int(ip.rsplit(".", 1)[1]))
    for name, record in registry.items():
        faas.assert_handler_responds(record["ip"])
    faas.wait_for_cleanup()


def test_rapid_redeploy_while_serving(faas, faasd):
    """Every request during 10 redeploys gets a full, valid answer from one version.

    Regression: every version used to be served from the same path
    STATE/images/NAME/rootfs, swapped with renameat2(RENAME_EXCHANGE) on redeploy. A
    request whose `runc run` was still setting up resolved that path more than once
    and could see two trees ("pivot_root .: invalid argument", a 502). Versions now
    live in STATE/images/NAME/vN, never renamed; `rootfs` is a link swapped atomically."""
    ip = faas.deploy_handler("fn", "hello").ip
    stop = f"{faasd.run_dir}/stop-client"
    client = faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "-c", "3", "--body", "ping",
                            "--until-file", stop, "--timeout", "30"], log_name="client")
    versions = {"hello": hello_body("POST"), "echo": "ping"}
    for i in range(10):
        handler = "echo" if i % 2 == 0 else "hello"
        d = faas.deploy_handler("fn", handler)
        assert d.ip == ip
        # Once the deploy returned, new requests get the new version.
        faas.assert_handler_responds(ip, expected_body=versions[handler], body="ping")
    faas.vm.write_file(stop, b"")
    results = client_results(client, 60)
    assert len(results) >= 10
    bad = failures(results, set(versions.values()))
    assert bad == [], (f"{len(bad)} of {len(results)} requests during redeploys got no valid "
                       f"answer, e.g. {bad[:2]}")
    assert faas.read_registry()["fn"]["version"] == 11
    faas.wait_for_cleanup()
    # The last three (--keep-versions) stay for a rollback; the older ones go.
    wait_for(lambda: faas.vm.listdir(f"{faasd.state_dir}/images/fn")
             == ["rootfs", "v10", "v11", "v9"], 20, what="retired rootfs versions to be removed")


def test_rm_while_serving(faas, faasd):
    """Connections accepted before `faas rm` are answered in full; later ones are
    refused at once. None gets a 502, a truncated answer or no answer at all.

    Regression 1 (as test_rapid_redeploy_while_serving): `faas rm` renamed the rootfs
    away while accepted requests were still starting their container from it (502s).
    Regression 2: the function's address was deleted at once, so the TCP connections
    of running requests (both ends on that address) became unroutable and clients
    hung. The address now goes when the function's last running request is done."""
    bad, total = [], 0
    for round_ in range(3):
        name = f"fn{round_}"
        ip = faas.deploy_handler(name).ip
        stop = f"{faasd.run_dir}/stop-{name}"
        client = faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "-c", "3",
                                "--until-file", stop, "--timeout", "5"], log_name="client")
        wait_for(lambda: faasd.log().count(f"spawning for {name}") >= 6, 20,
                 what=f"requests to {name} to be under way")
        faas.remove_handler(name)
        faas.vm.write_file(stop, b"")
        results = client_results(client, 60)
        total += len(results)
        bad += [r for r in results
                if not ((r["status"] == 200 and r["complete"] and r["body"] == hello_body())
                        or (r["status"] is None and r["raw_len"] == 0 and r["elapsed"] < 2
                            and re.search("Refused|unreachable|Reset", r["error"] or "")))]
    assert bad == [], f"{len(bad)} of {total} requests got a broken answer or none, e.g. {bad[:3]}"
    faas.wait_for_cleanup()
    wait_for(lambda: faas.vm.listdir(f"{faasd.state_dir}/images") == [], 20,
             what="the rootfs of removed functions to be deleted")
