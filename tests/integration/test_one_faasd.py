"""One faasd per state dir and per run dir: a second one started on either exits 1
with `Error: another faasd (pid N) is using DIR` before it touches anything, so the
first one's socket, containers, addresses and registry stay as they are and it keeps
serving. The lock file stays behind after a clean stop; the next faasd takes it."""

import json

import pytest

from lib.vm import wait_for

pytestmark = pytest.mark.integration


def start_request(faas, ip, timeout=60):
    return faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "--timeout", str(timeout)],
                         log_name="held-request")


def snapshot(faas, faasd):
    """What a second faasd must not touch."""
    vm = faas.vm
    registry = f"{faasd.state_dir}/registry.json"
    return {
        "socket": vm.run(["stat", "-c", "%i %y", faasd.socket]).stdout,
        "containers": sorted(faasd.runc_containers()),
        "bundles": sorted(faasd.bundles()),
        "addresses": faasd.faas_addresses(),
        "registry": (vm.read_file(registry), vm.run(["stat", "-c", "%y", registry]).stdout),
    }


def run_second(faas, faasd, state_dir, run_dir):
    argv = [faasd.faasd_bin, "--state-dir", state_dir, "--run-dir", run_dir,
            "--runtime", faasd.runtime, "--warm", "0"]
    proc = faas.vm.spawn(argv, log_name="second-faasd")
    rc = proc.wait(timeout=20)
    return rc, proc.stderr_text()


@pytest.mark.faasd_args("--drain-timeout", "1000")
@pytest.mark.parametrize("shared", ["state-dir", "run-dir"])
def test_second_faasd_on_the_same_dir_exits_1_and_touches_nothing(faas, faasd, shared):
    stuck = faas.deploy_handler("stuck", "sleeps-forever")
    hello = faas.deploy_handler("hello")
    client = start_request(faas, stuck.ip)
    wait_for(lambda: faasd.runc_containers() and faasd.bundles(), 15,
             what="the held request's container")
    before = snapshot(faas, faasd)
    assert len(before["containers"]) == 1, before

    if shared == "state-dir":
        dirs = (faasd.state_dir, f"{faasd.run_dir}/other-run")
        busy = faasd.state_dir
    else:
        dirs = (f"{faasd.run_dir}/other-state", faasd.run_dir)
        busy = faasd.run_dir
    rc, stderr = run_second(faas, faasd, *dirs)
    assert rc == 1, stderr
    assert stderr == f"Error: another faasd (pid {faasd.pid}) is using {busy}\n", stderr

    assert snapshot(faas, faasd) == before
    assert faasd.running() and faasd.healthy()
    faas.assert_handler_responds(hello.ip)
    assert client.poll() is None, "the held request is still running"
    assert faasd.stop() == 0
    assert client.wait(timeout=20) == 0
    faas.vm.run(["rm", "-rf", f"{faasd.run_dir}/other-run", f"{faasd.run_dir}/other-state"])


def test_after_a_stop_the_next_faasd_takes_the_lock(faas, faasd):
    d = faas.deploy_handler("hello")
    first_pid = faasd.pid
    assert faasd.stop() == 0
    for directory in (faasd.state_dir, faasd.run_dir):
        lock = f"{directory}/faasd.lock"
        assert faas.vm.read_file(lock).decode() == f"{first_pid}\n", "left behind, as documented"
    faasd.start()
    faas.assert_handler_responds(d.ip)
    for directory in (faasd.state_dir, faasd.run_dir):
        assert faas.vm.read_file(f"{directory}/faasd.lock").decode() == f"{faasd.pid}\n"
    mode = faas.vm.run(["stat", "-c", "%a %U", f"{faasd.state_dir}/faasd.lock"]).stdout.split()
    assert mode == ["600", "root"], mode
