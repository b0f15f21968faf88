"""Deploying, invoking, listing, redeploying and removing functions."""

import pytest

from lib.helpers import hello_body

pytestmark = pytest.mark.integration


@pytest.mark.vmtest
def test_deploy_and_invoke_hello(faas, faasd):
    d = faas.deploy_handler("hello")
    assert d.result.stdout == '✓ Deployed hello at 10.0.0.10\n  Command: ["/handler"]\n'
    assert d.result.stderr == ""
    r = faas.assert_handler_responds(d.ip, path="/some/path?x=1")
    assert r["body"] == "Hello from FaaS handler!\n\nRequest: GET /some/path?x=1 HTTP/1.1\n"
    assert r["headers"]["content-type"] == "text/plain"
    record = faas.read_registry()["hello"]
    assert record["ip"] == "10.0.0.10"
    assert record["rootfs"] == f"{faasd.state_dir}/images/hello/rootfs"
    assert record["cmd"] == ["/handler"]
    faas.assert_ip_configured("10.0.0.10")
    faas.assert_rootfs_exists("hello")
    assert faas.get_handler_ip("hello") == "10.0.0.10"
    faas.assert_bundles_cleaned_up()


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_archive_format_serves(faas, fmt):
    d = faas.deploy_handler("fn", "hello", fmt=fmt)
    assert d.command == ["/handler"]
    faas.assert_handler_responds(d.ip)
    faas.assert_bundles_cleaned_up()


def test_rootfs_reused_across_requests(faas, faasd):
    d = faas.deploy_handler("hello")
    root = f"{faasd.state_dir}/images/hello/rootfs"
    before = faas.stat(root, f"{root}/handler")
    for _ in range(5):
        faas.assert_handler_responds(d.ip)
    faas.assert_bundles_cleaned_up()
    after = faas.stat(root, f"{root}/handler")
    assert after == before, "the rootfs was re-created or rewritten by requests"
    # Nothing was extracted again: one import in the log, no new or retired trees.
    assert faasd.log().count("imported hello:") == 1
    assert faas.vm.listdir(f"{faasd.state_dir}/images/hello") == ["rootfs", "v1"]


def test_multiple_handlers_unique_ips_labelled(faas, faasd):
    deployed = [faas.deploy_handler("a", "hello"), faas.deploy_handler("b", "echo"),
                faas.deploy_handler("c", "hello")]
    ips = [d.ip for d in deployed]
    assert ips == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    for ip in ips:
        faas.assert_ip_configured(ip, label="lo:faas", prefixlen=24)
    assert faasd.faas_addresses() == ips
    # Each address serves its own function.
    faas.assert_handler_responds(ips[0])
    faas.assert_handler_responds(ips[1], expected_body="ping", body="ping")
    faas.assert_handler_responds(ips[2])
    for d in deployed:
        assert faas.get_handler_ip(d.name) == d.ip
    registry = faas.list_handlers()
    assert sorted(registry) == ["a", "b", "c"]
    assert {n: r["ip"] for n, r in registry.items()} == {"a": ips[0], "b": ips[1], "c": ips[2]}
    assert faas.read_registry() == registry
    assert faas.list_table() == [["Name", "IP", "Command"], ["a", ips[0], "/handler"],
                                 ["b", ips[1], "/handler"], ["c", ips[2], "/handler"]]
    faas.assert_bundles_cleaned_up()


@pytest.mark.vmtest
@pytest.mark.faasd_args("--keep-versions", "1")
def test_redeploy_keeps_ip_and_serves_new_version(faas, faasd):
    first = faas.deploy_handler("fn", "hello")
    faas.assert_handler_responds(first.ip)
    second = faas.deploy_handler("fn", "echo")
    assert second.ip == first.ip
    faas.assert_handler_responds(first.ip, expected_body="new version", body="new version")
    record = faas.read_registry()["fn"]
    assert record["ip"] == first.ip and record["version"] == 2
    assert faasd.faas_addresses() == [first.ip]
    # The replaced rootfs is removed once no request uses it.
    faas.wait_for_cleanup(
        lambda: faas.vm.listdir(f"{faasd.state_dir}/images/fn") == ["rootfs", "v2"],
        what="the retired rootfs of fn to be removed")
    faas.assert_bundles_cleaned_up()


def test_faas_rm(faas, faasd):
    gone = faas.deploy_handler("gone")
    kept = faas.deploy_handler("kept")
    r = faas.remove_handler("gone")
    assert r.stdout == "✓ Removed gone\n"
    assert "gone" not in faas.list_handlers()
    assert "gone" not in faas.read_registry()
    assert not faas.check_ip_configured(gone.ip)
    faas.wait_for_cleanup(lambda: not faas.vm.exists(f"{faasd.state_dir}/images/gone"),
                          what="the rootfs of a removed function to be deleted")
    # Its address no longer answers; the other function still does.
    r = faas.make_request(gone.ip, timeout=5)
    assert r["status"] is None and r["raw_len"] == 0 and r["error"], r
    faas.assert_handler_responds(kept.ip)
    ip = faasd.faas("ip", "gone")
    assert ip.returncode == 1 and ip.stderr.startswith("Error: "), ip
    assert faasd.api("GET", "/api/ip/gone")[0] == 404
    again = faas.remove_handler("gone", check=False)
    assert again.returncode == 1 and again.stderr.startswith("Error: "), again
    faas.assert_bundles_cleaned_up()


def test_removed_name_can_be_deployed_again(faas, faasd):
    faas.deploy_handler("fn", "hello")
    faas.remove_handler("fn")
    d = faas.deploy_handler("fn", "echo")
    faas.assert_handler_responds(d.ip, expected_body="back", body="back")
    assert faas.read_registry()["fn"]["version"] == 1


def test_python_handler_answers(faas):
    d = faas.deploy_handler("py", "python-hello")
    assert d.command == ["/usr/bin/python3", "-I", "-S", "/handler.py"]
    r = faas.assert_handler_responds(d.ip, path="/from/python")
    assert r["body"] == hello_body("GET", "/from/python")
    faas.assert_bundles_cleaned_up()


@pytest.mark.faasd_args("--run-timeout", "2000", "--keep-versions", "1")
def test_redeploy_keeps_old_rootfs_until_its_requests_finish(faas, faasd):
    old = faas.deploy_handler("fn", "sleeps-forever")
    client = faas.vm.spawn(["/usr/bin/python3", faas.client, old.ip, "--timeout", "30"],
                           log_name="client")
    faas.wait_for_cleanup(lambda: faasd.runc_containers(), what="the old version to run")
    running = faasd.runc_containers()
    faas.deploy_handler("fn", "hello")
    fn_dir = f"{faasd.state_dir}/images/fn"
    # rootfs now points at v2; v1 stays while its request runs.
    assert faas.vm.listdir(fn_dir) == ["rootfs", "v1", "v2"]
    assert faas.vm.run(["readlink", f"{fn_dir}/rootfs"]).stdout == "v2\n"
    assert faas.vm.exists(f"{fn_dir}/v1/handler")
    # New requests get the new version while the old one is still running.
    faas.assert_handler_responds(old.ip)
    assert faasd.runc_containers() == running
    # The old request ends at its run timeout; then its rootfs goes away.
    assert client.wait(timeout=30) == 0
    faas.wait_for_cleanup(lambda: faas.vm.listdir(fn_dir) == ["rootfs", "v2"],
                          what="the retired rootfs to be removed")
    faas.wait_for_cleanup()


def test_list_without_functions(faas):
    assert faas.list_handlers() == {}
    assert faas.list_table() == [["Name", "IP", "Command"]]


def test_a_new_function_at_the_address_asked_for(faas, faasd):
    """`faas new --ip`: a free address of the pool for a new function; a redeploy keeps
    the function's address and may only name that one."""
    app = faas.deploy_handler("app", options=("--ip", "10.0.0.42"))
    assert app.ip == "10.0.0.42"
    assert "10.0.0.42" in faasd.faas_addresses()
    faas.assert_handler_responds(app.ip, hello_body())
    assert faas.deploy_handler("app", options=("--ip", "10.0.0.42")).ip == "10.0.0.42"
    # Without --ip the next function gets the lowest free address, as before.
    assert faas.deploy_handler("other").ip == "10.0.0.10"

    for name, ip, why in [
        ("app", "10.0.0.43", "app is at 10.0.0.42; a redeploy keeps the function's address"),
        ("new", "10.0.0.42", "ip: 10.0.0.42 is app's"),
        ("new", "192.168.1.1", "ip: 192.168.1.1 is not in faasd's pool 10.0.0.0/24"),
        ("new", "10.0.0.300", "ip: "),
    ]:
        r = faas.deploy_handler(name, options=("--ip", ip), check=False).result
        assert r.returncode == 1 and r.stderr.startswith("Error: ") and why in r.stderr, r
    assert sorted(faas.list_handlers()) == ["app", "other"]
    assert faas.describe("app")["ip"] == "10.0.0.42"
