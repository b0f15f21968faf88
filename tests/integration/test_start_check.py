"""A deploy says whether the function starts: before answering, faasd starts one
container of the new version as a pooled one would be and waits for its handler to
connect. If it does not, `faas new` fails with the cause (the runtime's error, or the
handler's last output and exit status), the previous version keeps serving and
nothing of the new one is left. `--no-start-check` skips it; with a pool the checked
container is the first pooled one."""

import re

import pytest

from lib.helpers import hello_body

pytestmark = pytest.mark.integration

RUN_REFUSED = ("#!/bin/sh\n"
               "# $1 --root, $2 ROOT, $3 the verb\n"
               "if [ \"$3\" = run ]; then echo 'wrapper: run refused: no cgroup mount' >&2; "
               "exit 1; fi\n"
               "exec {runtime} \"$@\"\n")


def function_dir(faasd, name):
    return f"{faasd.state_dir}/images/{name}"


def assert_nothing_of_the_new_version(faas, faasd, name, versions):
    """Only `versions` (and the rootfs link, if any) in the function's dir; no bundle,
    no container."""
    vm = faas.vm
    if versions:
        assert sorted(vm.listdir(function_dir(faasd, name))) == sorted(["rootfs", *versions])
    else:
        assert not vm.exists(function_dir(faasd, name))
    assert faasd.bundles() == []
    assert faasd.runc_containers() == []
    assert vm.listdir(f"{faasd.state_dir}/tmp") == []


def test_handler_exiting_at_once_fails_the_deploy_and_the_old_version_serves(faas, faasd):
    d = faas.deploy_handler("fn", "hello")
    registry = faas.read_registry()
    r = faas.deploy_handler("fn", "complains", check=False).result
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr.startswith("Error: the new version of fn does not start: "), r.stderr
    assert "exit 3" in r.stderr and "boom" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert faas.read_registry() == registry
    assert_nothing_of_the_new_version(faas, faasd, "fn", ["v1"])
    faas.assert_handler_responds(d.ip, expected_body=hello_body())


def test_new_function_that_does_not_start_leaves_nothing(faas, faasd):
    r = faas.deploy_handler("fn", "complains", check=False).result
    assert r.returncode == 1 and "boom" in r.stderr, r
    assert faas.read_registry(missing_ok=True) in ({}, None)
    assert faasd.faas_addresses() == []
    assert_nothing_of_the_new_version(faas, faasd, "fn", [])


def test_no_start_check_deploys_a_handler_that_does_not_start(faas, faasd):
    d = faas.deploy_handler("fn", "complains", options=("--no-start-check",))
    assert faas.read_registry()["fn"]["version"] == 1
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 502, r


@pytest.mark.faasd_args("--connect-timeout", "300")
def test_handler_that_never_connects_fails_at_the_connect_timeout(faas, faasd):
    r = faas.deploy_handler("fn", "never-connects", check=False).result
    assert r.returncode == 1, r
    assert "did not connect to /control.sock within 300 ms" in r.stderr, r.stderr
    assert_nothing_of_the_new_version(faas, faasd, "fn", [])


def test_runtime_failing_to_run_fails_the_deploy_with_its_error(faas_unstarted, faasd_unstarted):
    faas, faasd = faas_unstarted, faasd_unstarted
    wrapper = f"{faas.vm.run_dir}/refusing-runtime"
    faas.vm.write_file(wrapper, RUN_REFUSED.format(runtime=faasd.runtime).encode(), mode=0o755)
    faasd.start("--runtime", wrapper)
    r = faas.deploy_handler("fn", "hello", check=False).result
    assert r.returncode == 1, r
    assert "wrapper: run refused: no cgroup mount" in r.stderr, r.stderr
    assert "exit 1" in r.stderr, r.stderr
    assert_nothing_of_the_new_version(faas, faasd, "fn", [])


def test_with_a_pool_the_checked_container_is_the_pooled_one(faas, faasd):
    d = faas.deploy_handler("fn", "hello", options=("--warm", "1"))
    # The answer came after the check: its container is the one pooled, none other.
    [checked] = re.findall(r"deploy of fn: container (\S+) of version 1 started", faasd.log())
    assert faasd.runc_containers() == [checked]
    rt = faas.runtime("fn")
    assert rt["pool_ready"] + rt["pool_starting"] == 1, rt
    faas.assert_handler_responds(d.ip, expected_body=hello_body())
    assert faas.runtime("fn")["warm_starts"] == 1


def test_without_a_pool_the_checked_container_is_gone_before_the_answer(faas, faasd):
    d = faas.deploy_handler("fn", "hello")
    assert re.search(r"deploy of fn: container \S+ of version 1 started", faasd.log())
    assert faasd.runc_containers() == []
    assert faasd.bundles() == []
    faas.assert_handler_responds(d.ip, expected_body=hello_body())
