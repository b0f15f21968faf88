"""One request, one container: timeouts, misbehaving handlers, big bodies, and
cleanup after every one of them."""

import hashlib
import re

import pytest

pytestmark = pytest.mark.integration


def request_outcomes(faasd, name):
    """The outcome of every finished request of `name`, from faasd's log lines
    `request NAME ID: OUTCOME in N ms`."""
    return re.findall(rf"request {re.escape(name)} faas-[0-9a-f]+-\d+: (.*) in \d+ ms", faasd.log())


def assert_closed_without_answer(r):
    assert r["status"] is None and r["raw_len"] == 0, f"expected a closed connection: {r}"
    assert r["error"] is None or "ConnectionReset" in r["error"], r


@pytest.mark.vmtest
@pytest.mark.faasd_args("--connect-timeout", "1000")
def test_connect_timeout_answers_504_and_cleans_up(faas, faasd):
    d = faas.deploy_handler("lazy", "never-connects", options=("--no-start-check",))
    r = faas.make_request(d.ip, timeout=20)
    assert 0.9 <= r["elapsed"] <= 6, r
    if r["raw_len"]:
        assert r["status"] == 504 and r["complete"], r
        assert r["body"] == "Gateway Timeout\n"
    else:
        assert_closed_without_answer(r)
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "lazy") == ["connect timeout"]
    assert "handler did not connect within 1000 ms" in faasd.log()
    assert faas.get_process_count() == 0


@pytest.mark.vmtest
@pytest.mark.faasd_args("--run-timeout", "1000")
def test_run_timeout_kills_handler_and_cleans_up(faas, faasd):
    d = faas.deploy_handler("stuck", "sleeps-forever")
    r = faas.make_request(d.ip, timeout=20)
    assert 0.9 <= r["elapsed"] <= 8, r
    assert_closed_without_answer(r)
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "stuck") == ["run timeout"]
    assert faas.get_process_count() == 0


@pytest.mark.vmtest
def test_handler_closing_early_is_cleaned_up(faas, faasd):
    d = faas.deploy_handler("rude", "closes-early")
    r = faas.make_request(d.ip, timeout=10)
    assert r["elapsed"] < 5, r
    assert_closed_without_answer(r)
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "rude") == ["exit 0"]


@pytest.mark.vmtest
def test_handler_exiting_nonzero_before_connecting_gets_502(faas, faasd):
    # A connect timeout far above the container's run time (seconds under TCG), so the
    # 502 shows faasd answered when the handler exited, not when the timeout fired.
    d = faas.deploy_handler("crash", "exit-nonzero",
                            options=("--no-start-check", "--connect-timeout", "60s"))
    r = faas.make_request(d.ip, timeout=60)
    assert r["status"] == 502 and r["complete"], r
    assert r["body"] == "Bad Gateway\n"
    assert r["elapsed"] < 30, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "crash") == ["exit 3"]
    # The next request is served the same way: nothing got stuck.
    assert faas.make_request(d.ip, timeout=10)["status"] == 502
    faas.wait_for_cleanup()


@pytest.mark.parametrize("size", [0, 1, 1 << 20, 3 << 20])
def test_echo_body_round_trip(faas, size):
    d = faas.deploy_handler("echo", "echo")
    r = faas.make_request(d.ip, body_size=size, method="POST", keep_body=0)
    assert r["status"] == 200 and r["complete"], r
    assert r["headers"]["content-length"] == str(size)
    assert r["body_len"] == size
    pattern = bytes(range(256)) * (size // 256 + 1)
    assert r["body_sha256"] == hashlib.sha256(pattern[:size]).hexdigest()
    faas.wait_for_cleanup()


@pytest.mark.vmtest
def test_memory_hog_is_oom_killed_and_daemon_still_serves(faas, faasd):
    hello = faas.deploy_handler("hello")
    hog = faas.deploy_handler("hog", "memory-hog")
    r = faas.make_request(hog.ip, timeout=60)
    assert "survived" not in (r["body"] or ""), f"the 512 MiB limit was not enforced: {r}"
    assert_closed_without_answer(r)
    faas.wait_for_cleanup()
    # runc reports the container's SIGKILL as 128+9.
    assert request_outcomes(faasd, "hog") in (["exit 137"], ["killed by signal 9"]), faasd.log()[-2000:]
    faas.assert_handler_responds(hello.ip)
    faas.wait_for_cleanup()


def cgroup_limits(faas, container_id):
    """(memory bytes, pids, cpu quota per 100 ms) of a running container's cgroup,
    from the cgroup v1 hierarchy or, on a v2 host, from the unified one."""
    v1 = "/sys/fs/cgroup/{}/faasd/" + container_id + "/{}"
    if faas.vm.exists(v1.format("memory", "memory.limit_in_bytes")):
        def read(ctl, name):
            return faas.vm.read_file(v1.format(ctl, name)).decode().strip()
        return (read("memory", "memory.limit_in_bytes"), read("pids", "pids.max"),
                read("cpu", "cpu.cfs_quota_us") + " " + read("cpu", "cpu.cfs_period_us"))
    v2 = f"/sys/fs/cgroup/faasd/{container_id}/"
    def read2(name):
        return faas.vm.read_file(v2 + name).decode().strip()
    return read2("memory.max"), read2("pids.max"), read2("cpu.max")


@pytest.mark.vmtest
def test_handler_runs_in_the_documented_sandbox(faas):
    """The container contract of src/runtime/bundle.h: own pid/net/uts namespaces,
    no capabilities, no_new_privs, read-only root, writable /tmp, nofile 1024."""
    d = faas.deploy_handler("inspect", "inspect")
    r = faas.make_request(d.ip)
    assert r["status"] == 200 and r["complete"], r
    facts = dict(line.split("=", 1) for line in r["body"].splitlines())
    assert facts == {
        "pid": "1",
        "uid": "0",
        "hostname": "faas",
        "cap_eff": "0000000000000000",
        "cap_bnd": "0000000000000000",
        "no_new_privs": "1",
        "write_root": "Read-only file system",
        "write_tmp": "ok",
        "nofile": "1024",
        "control_socket": "/control.sock",
        "interfaces": "lo",
    }
    faas.wait_for_cleanup()


@pytest.mark.vmtest
@pytest.mark.faasd_args("--run-timeout", "5000")
def test_container_cgroup_limits(faas, faasd):
    d = faas.deploy_handler("stuck", "sleeps-forever")
    client = faas.vm.spawn(["/usr/bin/python3", faas.client, d.ip, "--timeout", "30"],
                           log_name="client")
    [cid] = faas.wait_for_cleanup(lambda: faasd.runc_containers(), what="the container to run")
    assert cgroup_limits(faas, cid) == (str(512 << 20), "64", "100000 100000")
    faasd.vm.run([faasd.runtime, "--root", faasd.runc_root, "kill", cid, "KILL"])
    assert client.wait(timeout=20) == 0
    faas.wait_for_cleanup()
