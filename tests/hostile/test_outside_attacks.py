"""Attacks from outside the sandbox: clients that connect and say nothing, load that
takes every fd faasd may open, a local process that races a handler to its control
socket, and a second faasd in the same network namespace. Each test fails on a faasd
without the matching defence; afterwards faasd serves and nothing leaked."""

import json
import os
import re
from pathlib import Path

import pytest

from hostile_lib import Bystander, deploy
from lib.daemon import Faasd
from lib.vm import wait_for

pytestmark = pytest.mark.integration

HOLD = str(Path(__file__).with_name("hold_connections.py"))

# Polls /healthz over one keep-alive connection opened before the load, so it needs no
# new fd from faasd while its fds run out. Prints the statuses seen, as JSON.
HEALTH_WATCH = r"""
import json, os, socket, sys, time
sock_path, stop = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
seen = {}
buf = b""
print("watching", flush=True)
while not os.path.exists(stop):
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: faasd\r\n\r\n")
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length")][0])
    while len(buf) < length:
        buf += s.recv(65536)
    body, buf = json.loads(buf[:length]), buf[length:]
    if body["status"] not in seen:
        print("seen", body["status"], flush=True)
    seen[body["status"]] = body
    time.sleep(0.05)
print(json.dumps(seen))
"""


def hold(faas, *targets, send="", until=None, max_seconds=60, name="hold"):
    argv = ["/usr/bin/python3", faas.vm.import_file(HOLD), *targets,
            "--max-seconds", str(max_seconds)]
    if send:
        argv += ["--send", send]
    if until:
        argv += ["--until", until]
    spawned = faas.vm.spawn(argv, log_name=name)
    wait_for(lambda: "held" in spawned.stdout_text() or spawned.poll() is not None, 30,
             what="the connections to be open")
    return spawned


def held_result(spawned, timeout=90) -> dict:
    assert spawned.wait(timeout=timeout) == 0, spawned.stderr_text()
    return json.loads(spawned.stdout_text().splitlines()[-1])


# --- clients that send nothing ----------------------------------------------------------

@pytest.mark.faasd_args("--first-byte-timeout", "2s")
def test_idle_connections_take_no_slot_and_are_closed(faas, faasd, bystander):
    """Eight connections that never send a byte, to a function with one slot and a
    queue of one: a real client is still served at once, and the idle ones are closed
    after the first-byte timeout without ever taking a container."""
    d = deploy(faas, "slow", "slow", "--env", "SLEEP_MS=50", "--max-concurrency", "1",
               "--queue", "1", "--queue-timeout", "2s")
    bystander.mark()
    idle = hold(faas, f"{d.ip}:80x8", max_seconds=30)
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 200 and r["complete"], r
    result = held_result(idle)
    assert result["opened"] == 8 and result["closed_by_peer"] == 8, result
    assert max(result["closed_after"]) < 15, result
    runtime = faas.runtime("slow")
    assert runtime["rejected_503"] == 0 and runtime["requests"] == 1, runtime
    assert runtime["first_byte_timeouts"] == 8, runtime
    bystander.assert_unharmed()


@pytest.mark.faasd_args("--first-byte-timeout", "3s")
def test_idle_connections_from_one_address_are_capped(faas, faasd, bystander):
    """40 silent connections from one address: 32 may wait for their first byte, the
    other 8 are closed at once; a client that sends is served meanwhile."""
    bystander.mark()
    idle = hold(faas, f"{bystander.ip}:80x40", max_seconds=30)
    faas.assert_handler_responds(bystander.ip)
    result = held_result(idle)
    assert result["opened"] == 40 and result["closed_by_peer"] == 40, result
    runtime = faas.runtime("hello")
    assert runtime["refused_waiting"] == 8, runtime
    assert runtime["first_byte_timeouts"] == 32, runtime
    bystander.assert_unharmed()


# --- out of file descriptors ------------------------------------------------------------

def test_fd_exhaustion_pauses_accepting_and_everything_recovers(vm, faasd_unstarted,
                                                                faas_unstarted):
    """faasd may open 192 fds. 240 clients that send one byte and wait hold three of
    five functions: accept fails with EMFILE. faasd pauses those listeners (logging
    once per interval, not per failure), /healthz says degraded meanwhile, containers
    that cannot get an fd fail alone; once the clients go, every function answers and
    nothing leaked."""
    faasd_unstarted.launcher = ["prlimit", "--nofile=192:192", "--"]
    faasd = faasd_unstarted.start()
    faas = faas_unstarted
    bystander = Bystander(faas)
    others = [deploy(faas, f"fn{i}", "hello") for i in range(4)]
    ips = [bystander.ip] + [d.ip for d in others]
    for ip in ips:
        faas.assert_handler_responds(ip)
    faas.wait_for_cleanup()
    bystander.mark()

    stop = f"{faasd.run_dir}/stop-load"
    watch = vm.spawn(["/usr/bin/python3", "-c", HEALTH_WATCH, faasd.socket, stop],
                     log_name="health")
    wait_for(lambda: "watching" in watch.stdout_text(), 10, what="the health watcher")
    load = hold(faas, *[f"{ip}:80x80" for ip in ips[2:]], send="G", until=stop,
                max_seconds=60, name="load")
    wait_for(lambda: "pausing it for" in faasd.log(), 30, what="a paused listener")
    wait_for(lambda: "seen degraded" in watch.stdout_text(), 30, what="/healthz degraded")
    vm.write_file(stop, b"")
    assert watch.wait(timeout=30) == 0, watch.stderr_text()
    seen = json.loads(watch.stdout_text().splitlines()[-1])
    held_result(load)
    # The load's containers end as their clients go: fds come back.
    faas.wait_for_cleanup(timeout=60)

    assert "degraded" in seen, seen
    assert any("paused" in reason for reason in seen["degraded"]["reasons"]), seen
    for ip in ips:
        faas.assert_handler_responds(ip)
    assert faasd.healthy()
    errors = sum(faas.runtime(f"fn{i}")["accept_errors"] for i in (1, 2, 3))
    assert errors > 0
    log = faasd.log()
    pauses = log.count("pausing it for")
    assert 0 < pauses <= 3 * 8, f"{pauses} pause lines for {errors} failed accepts"
    assert "unexpected exception" not in log
    bystander.assert_unharmed(timeout=60)


# --- the control socket ------------------------------------------------------------------

# Connects to a container's control socket and waits for a client fd, as a process
# outside the container would to steal the next client. Prints what it got.
STEAL = r"""
import array, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused", e.errno, flush=True)
    sys.exit(0)
print("connected", flush=True)
s.settimeout(20)
fds = array.array("i")
try:
    msg, anc, flags, _ = s.recvmsg(16, socket.CMSG_SPACE(4 * fds.itemsize))
except socket.timeout:
    print("timeout")
    sys.exit(0)
got = any(level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS for level, kind, _ in anc)
print("client" if got else ("eof" if not msg else "data"))
"""


@pytest.mark.vmtest
def test_a_process_outside_the_container_gets_no_client(faas, faasd, bystander):
    """A reused container waits for its handler to come back for the next client. A
    root process outside the container connects to that control socket first: faasd
    refuses it (not in the container's cgroup), and the next client goes to the real
    handler."""
    d = deploy(faas, "reuser", "reuser", "--reuse", "2")
    bystander.mark()
    # The first client sends part of its request: the handler holds it, waiting.
    first = hold(faas, f"{d.ip}:80x1", send="GET / HTTP/1.1\r\n", max_seconds=30,
                 name="first")
    [bundle] = wait_for(lambda: faasd.bundles(), 10, what="the container's bundle")
    sock = f"{faasd.state_dir}/bundles/{bundle}/control.sock"
    wait_for(lambda: faas.runtime("reuser")["active"] == 1, 10, what="the first client handed")
    thief = faas.vm.spawn(["/usr/bin/python3", "-c", STEAL, sock], log_name="thief")
    wait_for(lambda: "refused a control connection" in faasd.log(), 10,
             what="faasd to refuse the stranger")
    assert thief.wait(timeout=30) == 0, thief.stderr_text()
    assert thief.stdout_text().split() == ["connected", "eof"], thief.stdout_text()
    first.kill()
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 200 and r["complete"], r
    bystander.assert_unharmed()


def test_local_users_cannot_reach_a_control_socket_with_userns(faas_unstarted, faasd_unstarted):
    """With --userns the container's root is an unprivileged host user; other local
    users must not reach the pooled container's control socket at all."""
    faas, faasd = faas_unstarted, faasd_unstarted
    # The mapped root must reach STATE (the sandbox's parent dir is 0700).
    faas.vm.run(["chmod", "0755", os.path.dirname(faasd.state_dir)])
    faasd.start("--userns", "--warm", "1")
    d = faas.deploy_handler("hello")
    faas.wait_pool_ready("hello", 1)
    [bundle] = faasd.bundles()
    sock = f"{faasd.state_dir}/bundles/{bundle}/control.sock"
    r = faas.vm.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     "/usr/bin/python3", "-c", STEAL, sock], timeout=30)
    assert r.stdout.split()[0] == "refused", r.stdout
    assert int(r.stdout.split()[1]) == 13, r.stdout  # EACCES
    faas.assert_handler_responds(d.ip)


# --- a second faasd in the same network namespace ----------------------------------------

def second_faasd(vm, faasd) -> Faasd:
    other = Faasd(vm, Path(faasd.faasd_bin).parent, faasd.runtime)
    other.state_dir = f"{vm.run_dir}/second-state"
    other.run_dir = f"{vm.run_dir}/second-run"
    other.socket = f"{other.run_dir}/faasd.sock"
    return other


def test_a_second_faasd_with_an_overlapping_pool_refuses_to_start(vm, faas, faasd, bystander):
    """Another faasd (own state and run dirs) in this namespace with the same pool
    would take the first one's addresses for leftovers and delete them: it exits 1
    naming the first one's pid, and the first one's address stays and serves."""
    bystander.mark()
    other = second_faasd(vm, faasd)
    r = vm.run(other.command(), check=False, timeout=30)
    assert r.returncode == 1, r
    assert (f"another faasd (pid {faasd.pid}) serves the address pool 10.0.0.0/24 in this "
            "network namespace") in r.stderr, r.stderr
    assert faasd.faas_addresses() == [bystander.ip]
    bystander.assert_unharmed()


def test_a_second_faasd_with_another_pool_leaves_the_first_ones_addresses(vm, faas, faasd,
                                                                           bystander, images):
    """A second faasd on 10.0.1.0/24 in the same namespace starts, serves its own
    function, and neither its start nor its shutdown touches the first one's address."""
    bystander.mark()
    other = second_faasd(vm, faasd)
    other.start("--pool", "10.0.1.0/24")
    try:
        r = other.faas("new", "mine", stdin_path=faas.image("hello"))
        assert r.returncode == 0 and "10.0.1.10" in r.stdout, r
        assert faasd.faas_addresses() == sorted([bystander.ip, "10.0.1.10"])
        faas.assert_handler_responds("10.0.1.10")
        faas.assert_handler_responds(bystander.ip)
    finally:
        assert other.stop() == 0
    assert faasd.faas_addresses() == [bystander.ip]
    bystander.assert_unharmed()


def test_faasd_raises_its_soft_fd_limit_to_the_hard_one(faasd_unstarted):
    """Started with a soft open-files limit of 64 (a low default) and a hard one of
    4096, faasd takes all 4096 before it serves."""
    faasd_unstarted.launcher = ["prlimit", "--nofile=64:4096", "--"]
    faasd = faasd_unstarted.start()
    limits = faasd.vm.run(["cat", f"/proc/{faasd.pid}/limits"]).stdout
    assert re.search(r"Max open files +4096 +4096 ", limits), limits
