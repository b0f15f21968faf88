"""Daemon lifecycle: SIGTERM, restart, kill -9, and addresses faasd does not own."""

import json
import signal

import pytest

from lib.helpers import SlowUpload
from lib.vm import wait_for

pytestmark = pytest.mark.integration


def start_request(faas, ip, timeout=60, log_name="client"):
    """A request running in the background (vm.spawn); returns its handle."""
    return faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "--timeout", str(timeout)],
                         log_name=log_name)


def wait_for_running_container(faasd, timeout=15):
    return wait_for(lambda: faasd.runc_containers() and faasd.bundles(), timeout,
                    what="a container to be running")


@pytest.mark.vmtest
def test_sigterm_removes_all_faas_addresses(faas, faasd):
    ips = [faas.deploy_handler(f"fn{i}").ip for i in range(3)]
    assert faasd.faas_addresses() == ips
    assert faasd.stop() == 0
    assert faasd.faas_addresses() == []
    assert [a["local"] for a in faasd.addresses()] == ["127.0.0.1"]
    # The registry persists: the functions come back on the next start.
    assert sorted(faas.read_registry()) == ["fn0", "fn1", "fn2"]
    assert "faasd stopped" in faasd.log()


@pytest.mark.vmtest
def test_unlabelled_address_is_never_allocated_nor_removed(faas_unstarted, faasd_unstarted):
    faas, faasd = faas_unstarted, faasd_unstarted
    faas.vm.run(["ip", "addr", "add", "10.0.0.10/24", "dev", "lo"])  # label "lo": not ours
    faasd.start()
    a = faas.deploy_handler("a")
    b = faas.deploy_handler("b")
    assert [a.ip, b.ip] == ["10.0.0.11", "10.0.0.12"]
    faas.assert_handler_responds(a.ip)
    faas.assert_handler_responds(b.ip)
    assert faas.check_ip_has_label("10.0.0.10", "lo")
    # Removing a function and restarting do not touch it either.
    faas.remove_handler("a")
    faasd.restart()
    assert faas.check_ip_has_label("10.0.0.10", "lo")
    c = faas.deploy_handler("c")
    assert c.ip not in ("10.0.0.10", b.ip)
    assert faasd.stop() == 0
    assert faasd.faas_addresses() == []
    assert [(x["local"], x["label"]) for x in faasd.addresses()] == [
        ("127.0.0.1", "lo"), ("10.0.0.10", "lo")]


def test_stale_faas_address_removed_at_start(faas_unstarted, faasd_unstarted):
    """A lo:faas address that no registered function owns was left by a dead faasd."""
    faas, faasd = faas_unstarted, faasd_unstarted
    faas.vm.run(["ip", "addr", "add", "10.0.0.77/24", "dev", "lo", "label", "lo:faas"])
    faasd.start()
    assert faasd.faas_addresses() == []
    assert "removing stale address 10.0.0.77" in faasd.log()
    assert faas.deploy_handler("a").ip == "10.0.0.10"


@pytest.mark.vmtest
def test_restart_restores_addresses_and_serves(faas, faasd):
    a = faas.deploy_handler("a", "hello")
    b = faas.deploy_handler("b", "echo")
    registry = faas.read_registry()
    faasd.restart()
    assert faasd.faas_addresses() == [a.ip, b.ip]
    faas.assert_ip_configured(a.ip)
    faas.assert_ip_configured(b.ip)
    assert faas.read_registry() == registry
    assert faas.list_handlers() == registry
    faas.assert_handler_responds(a.ip)
    faas.assert_handler_responds(b.ip, expected_body="restored", body="restored")
    assert "2 function(s) restored" in faasd.log()
    # And a new function does not collide with the restored ones.
    c = faas.deploy_handler("c")
    assert c.ip == "10.0.0.12"


@pytest.mark.vmtest
def test_kill9_then_restart_cleans_up_and_serves(faas, faasd):
    hello = faas.deploy_handler("hello")
    stuck = faas.deploy_handler("stuck", "sleeps-forever")
    client = start_request(faas, stuck.ip)
    wait_for_running_container(faasd)
    faasd.kill9()
    # What a dead faasd leaves: its addresses, a bundle, a runc container.
    assert faasd.faas_addresses() == [hello.ip, stuck.ip]
    stale_bundles = faasd.bundles()
    stale_containers = faasd.runc_containers()
    assert len(stale_bundles) == 1 and stale_containers == stale_bundles

    faasd.start()
    # Start-up removed them before serving.
    assert faasd.bundles() == []
    assert faasd.runc_containers() == []
    assert f"removing container {stale_containers[0]}" in faasd.log()
    assert faasd.faas_addresses() == [hello.ip, stuck.ip]
    faas.assert_handler_responds(hello.ip)
    # The orphaned request died with its container: the client got no answer.
    rc = client.wait(timeout=20)
    assert rc == 0
    result = json.loads(client.stdout_text())["results"][0]
    assert result["status"] is None and result["raw_len"] == 0, result
    faas.wait_for_cleanup()
    assert faas.get_process_count() == 0


@pytest.mark.faasd_args("--drain-timeout", "1000")
def test_sigterm_drains_then_kills_running_requests(faas, faasd):
    stuck = faas.deploy_handler("stuck", "sleeps-forever")
    client = start_request(faas, stuck.ip)
    wait_for_running_container(faasd)
    faasd.proc.kill(signal.SIGTERM)
    rc = faasd.proc.wait(timeout=15)
    assert rc == 0, faasd.log()[-3000:]
    assert "drain timeout: killing 1 request(s)" in faasd.log()
    assert client.wait(timeout=10) == 0
    assert faasd.leftovers() == {}


def test_sigterm_during_upload_exits_cleanly(faas, faasd):
    hello = faas.deploy_handler("hello")
    upload = SlowUpload(faas, "slow")
    faasd.proc.kill(signal.SIGTERM)
    try:
        rc = faasd.proc.wait(timeout=20)
    finally:
        upload.abort()
    assert rc == 0, faasd.log()[-3000:]
    assert faasd.faas_addresses() == []
    assert "slow" not in faas.read_registry()
    faasd.start()
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == ["hello"]
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    faas.assert_handler_responds(hello.ip)


def test_kill9_during_deploy_then_restart_removes_partial_import(faas, faasd):
    hello = faas.deploy_handler("hello")
    upload = SlowUpload(faas, "partial", head_bytes=300000)
    # The import has begun: a spool dir in tmp/ and a .new-* dir for the rootfs.
    wait_for(lambda: faas.vm.listdir(f"{faasd.state_dir}/tmp"), 10, what="the import to spool")
    assert [n.startswith(".new-") for n in faas.vm.listdir(f"{faasd.state_dir}/images/partial")] == [True]
    faasd.kill9()
    upload.abort()
    faasd.start()
    assert faas.tree(f"{faasd.state_dir}/tmp") == []
    assert [p for p in faas.tree(f"{faasd.state_dir}/images") if ".new-" in p] == []
    assert sorted(faas.read_registry()) == ["hello"]
    faas.assert_handler_responds(hello.ip)
    # Regression: start-up removed images/NAME/.new-* but left the then-empty
    # images/NAME/ of a function that was never deployed.
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == ["hello"], \
        "start-up left the empty directory of a never-deployed function"
    d = faas.deploy_handler("partial")
    faas.assert_handler_responds(d.ip)


def test_control_socket_and_dirs_are_private(faas, faasd):
    st = faas.stat(faasd.socket, faasd.run_dir, faasd.state_dir)
    assert st[faasd.socket]["mode"] & 0o777 == 0o600
    assert st[faasd.run_dir]["mode"] & 0o777 == 0o700
    assert st[faasd.state_dir]["mode"] & 0o777 == 0o700
    faas.deploy_handler("hello")
    reg = faas.stat(f"{faasd.state_dir}/registry.json")[f"{faasd.state_dir}/registry.json"]
    assert reg["mode"] & 0o777 == 0o600
