"""faasd with crun instead of runc (`--runtime crun`), where crun can and cannot work.

crun 1.8 refuses a host whose cgroups are in hybrid mode (v1 hierarchies plus a
cgroup2 mount holding a controller): "cgroups in hybrid mode not supported, drop all
controllers from cgroupv2". faasd must find that out at start-up and refuse to start,
not start and fail every request. With cgroup v2 only (the qemu guest) crun works and
faasd serves with it. Each test runs only in the cgroup layout it is about (the
`cgroup_hybrid` / `cgroup_v2` markers, see tests/conftest.py).
"""

import json
import signal
import subprocess

import pytest

pytestmark = pytest.mark.integration

HYBRID_ERROR = "cannot start: crun cannot run containers on this host"


def _error_lines(log: str) -> list:
    """Lines logged at level error or critical (`DATE LEVEL message`)."""
    return [line for line in log.splitlines()
            if len(line.split()) > 1 and line.split()[1] in ("error", "critical")]


@pytest.mark.cgroup_hybrid
def test_crun_on_hybrid_cgroups_stops_faasd_at_start_and_touches_nothing(faas_unstarted,
                                                                        faasd_unstarted):
    """A function was deployed (with runc), so a faasd that got as far as restoring
    its functions would put 10.0.0.10 back on lo. With crun on this host faasd must
    exit 1 before that, with one error naming crun and the hybrid cgroups, and leave
    no address, no control socket and no container behind.
    Fails until faasd checks at start-up that its runtime can run containers here:
    today it starts, and every request then fails in `crun run`."""
    faas, faasd = faas_unstarted, faasd_unstarted
    faasd.runtime = "runc"
    faasd.start()
    faas.deploy_handler("hello")
    assert faasd.stop() == 0
    assert faasd.faas_addresses() == []
    vm = faas.vm
    socket = f"{vm.run_dir}/faasd.sock"
    assert not vm.exists(socket)

    proc = vm.spawn(faasd.command("--runtime", "crun"), log_name="faasd-crun")
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        # Still serving: stop it the clean way, so that what it restored is removed
        # and the failure below is the only one reported.
        proc.kill(signal.SIGTERM)
        proc.wait(timeout=30)
        rc = None
    log = proc.stderr_text()
    assert rc == 1, f"faasd --runtime crun on hybrid cgroups: exit {rc}, expected 1:\n{log}"
    errors = _error_lines(log)
    assert len(errors) == 1, f"expected one error, got {errors}:\n{log}"
    assert HYBRID_ERROR in errors[0] and "hybrid" in errors[0], errors[0]
    assert faasd.faas_addresses() == []
    assert not vm.exists(socket)
    assert faasd.bundles() == []
    for root in (f"{vm.run_dir}/crun", f"{vm.run_dir}/runc"):
        assert vm.run(["crun", "--root", root, "list", "-q"], check=False).stdout == ""


@pytest.mark.vmtest
@pytest.mark.cgroup_v2
def test_crun_with_cgroup_v2_starts_and_serves(faas_unstarted, faasd_unstarted):
    """The reverse: with cgroup v2 only, `faasd --runtime crun` starts, its containers
    are crun's (crun lists the pooled one, runc knows none), and it serves."""
    faas, faasd = faas_unstarted, faasd_unstarted
    faasd.runtime = "crun"
    faasd.start("--connect-timeout", "60000")
    d = faas.deploy_handler("hello", options=("--warm", "1"))
    faas.wait_pool_ready("hello", 1, timeout=60)
    [cid] = faasd.runc_containers()
    state = json.loads(faas.vm.run(["crun", "--root", faasd.runc_root, "state", cid]).stdout)
    assert state["status"] == "running", state
    assert faas.vm.run(["runc", "--root", faasd.runc_root, "list", "-q"],
                       check=False).stdout.split() == []
    faas.assert_handler_responds(d.ip, timeout=60)
    faas.remove_handler("hello")
    faasd.wait_idle(timeout=60)
