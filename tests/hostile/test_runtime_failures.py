"""faasd with a broken OCI runtime (--runtime): a request gets a clear answer from
faasd (502, 500 or 504), never a hang, and the bundle is cleaned up."""

import pytest

from hostile_lib import request_outcomes
from lib.helpers import hello_body

pytestmark = pytest.mark.integration

# faasd calls the runtime as `RUNTIME --version` and `RUNTIME --root ROOT list --quiet`
# at start, then `RUNTIME --root ROOT run --bundle DIR ID` per container ($3 is the
# verb). The fakes that must let faasd start answer the first two; their deploys skip
# the start check (--no-start-check), which would refuse them, to reach the requests.
ALWAYS_FAILS = "#!/bin/sh\necho 'fake runtime: failing' >&2\nexit 1\n"
STARTS_OK = ("#!/bin/sh\n"
             "case \"$1\" in --version) echo 'fake-runtime version 0'; exit 0 ;; esac\n"
             "case \"$3\" in list) exit 0 ;; esac\n")
LIST_OK_ELSE_FAILS = (STARTS_OK +
                      "echo \"fake runtime: refusing $3\" >&2\n"
                      "exit 1\n")
LIST_OK_ELSE_HANGS = (STARTS_OK +
                      "exec sleep 3600\n")
NO_CHECK = ("--no-start-check",)


def write_runtime(vm, name, script):
    path = f"{vm.run_dir}/{name}"
    vm.write_file(path, script.encode(), mode=0o755)
    return path


def assert_refuses_to_start(vm, faasd, runtime, message):
    """faasd cannot run its runtime at start: it exits 1 and says why."""
    proc = vm.spawn(faasd.command("--runtime", runtime), log_name="faasd-bad-runtime")
    rc = proc.wait(timeout=20)
    assert rc == 1, proc.stderr_text()
    assert message in proc.stderr_text(), proc.stderr_text()
    assert faasd.faas_addresses() == []


def test_runtime_that_always_fails_stops_faasd_at_start(vm, faasd_unstarted):
    runtime = write_runtime(vm, "fake-runtime", ALWAYS_FAILS)
    assert_refuses_to_start(vm, faasd_unstarted, runtime,
                            f"cannot start: OCI runtime {runtime} does not run: `--version` "
                            f"failed (exit 1): fake runtime: failing")


def test_missing_cgroup_mounts_stop_faasd_at_start(vm, faasd_unstarted):
    """An empty /sys/fs/cgroup (in the test's own mount namespace): runc runs, but no
    container could get its memory, cpu and pids limits."""
    vm.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "faasd-test-no-cgroups",
            "/sys/fs/cgroup"])
    try:
        assert_refuses_to_start(vm, faasd_unstarted, faasd_unstarted.runtime,
                                "cannot start: the cgroup controller(s) memory, cpu, pids are "
                                "not available under /sys/fs/cgroup")
        assert not vm.exists(faasd_unstarted.socket)
    finally:
        vm.run(["umount", "/sys/fs/cgroup"])


def test_nonexistent_runtime_stops_faasd_at_start(vm, faasd_unstarted):
    assert_refuses_to_start(vm, faasd_unstarted, "/nonexistent",
                            "cannot start: OCI runtime /nonexistent: No such file or directory")


def test_runtime_failing_to_run_gets_502(faas_unstarted, faasd_unstarted):
    faas, faasd = faas_unstarted, faasd_unstarted
    runtime = write_runtime(faas.vm, "fake-runtime", LIST_OK_ELSE_FAILS)
    faasd.start("--runtime", runtime)
    d = faas.deploy_handler("hello", options=NO_CHECK)
    for _ in range(3):
        r = faas.make_request(d.ip, timeout=20)
        assert r["status"] == 502 and r["complete"], r
        assert r["body"] == "Bad Gateway\n"
        assert r["elapsed"] < 5, r
    faas.assert_bundles_cleaned_up()
    assert request_outcomes(faasd, "hello") == ["exit 1"] * 3
    assert faasd.log().count("fake runtime: refusing run") == 3
    assert faasd.healthy()


def test_runtime_vanishing_gets_500_and_a_closed_connection(faas_unstarted, faasd_unstarted):
    """The runtime exists at start, then is gone: spawning it fails, faasd answers 500
    itself and closes the connection (no hang), and keeps serving once it is back."""
    faas, faasd = faas_unstarted, faasd_unstarted
    runtime = write_runtime(faas.vm, "fake-runtime", LIST_OK_ELSE_FAILS)
    faasd.start("--runtime", runtime)
    d = faas.deploy_handler("hello", options=NO_CHECK)
    faas.vm.run(["rm", runtime])
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 500 and r["complete"], r
    assert r["body"] == "Internal Server Error\n"
    assert r["error"] is None and r["elapsed"] < 5, r
    faas.assert_bundles_cleaned_up()
    [outcome] = request_outcomes(faasd, "hello")
    assert outcome == f"failed: spawn {runtime}: No such file or directory", outcome
    # The real runtime back under that name: requests are served again.
    faas.vm.run(["ln", "-s", "/usr/sbin/runc", runtime])
    faas.assert_handler_responds(d.ip, expected_body=hello_body())
    faas.wait_for_cleanup()
    assert faasd.healthy()


def test_runtime_hanging_gets_504_at_the_connect_timeout(faas_unstarted, faasd_unstarted):
    faas, faasd = faas_unstarted, faasd_unstarted
    runtime = write_runtime(faas.vm, "fake-runtime", LIST_OK_ELSE_HANGS)
    faasd.start("--runtime", runtime, "--connect-timeout", "1000")
    d = faas.deploy_handler("hello", options=NO_CHECK)
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 504 and r["complete"], r
    assert r["body"] == "Gateway Timeout\n"
    assert 0.9 <= r["elapsed"] <= 5, r
    faas.assert_bundles_cleaned_up()
    assert request_outcomes(faasd, "hello") == ["connect timeout"]
    assert faasd.healthy()
