"""Hostile handlers: code that attacks the sandbox or the daemon from inside a
container. Each is deployed next to a hello function (the `bystander`); the client
gets an exact outcome within a bound, and afterwards faasd is healthy, hello still
answers, and nothing leaked (bundle, runc container, cgroup, process, faasd fd)."""

import json

import pytest

from hostile_lib import (answer_lines, assert_closed_without_answer, deploy, request_ids,
                         request_outcomes)
from lib.vm import wait_for

pytestmark = pytest.mark.integration


def spawn_client(faas, ip, path="/", timeout=30, name="client"):
    return faas.vm.spawn(["/usr/bin/python3", faas.client, ip, "--path", path,
                          "--timeout", str(timeout)], log_name=name)


def client_result(spawned, timeout=60):
    assert spawned.wait(timeout=timeout) == 0, spawned.stderr_text()
    return json.loads(spawned.stdout_text())["results"][0]


def cgroup_file(faas, container_id, controller, name):
    """A control file of a running container's cgroup (v1 hierarchy, else v2)."""
    v1 = f"/sys/fs/cgroup/{controller}/faasd/{container_id}/{name}"
    if faas.vm.exists(v1):
        return faas.vm.read_file(v1).decode().strip()
    return faas.vm.read_file(f"/sys/fs/cgroup/faasd/{container_id}/{name}").decode().strip()


# --- processes, memory, CPU, time ------------------------------------------------------

def test_fork_bomb_stops_at_the_pids_limit(faas, faasd, bystander):
    """pid 1 forks pausing children until fork() fails: with --pids 32 it gets 31
    (itself being the 32nd) and then EAGAIN, and answers that."""
    d = deploy(faas, "bomb", "fork-bomb", "--pids", "32", "--timeout", "5s")
    bystander.mark()
    r = faas.make_request(d.ip, path="/count", timeout=20)
    assert r["status"] == 200 and r["complete"], r
    assert r["body"] == "forked=31 error=EAGAIN\n"
    assert r["elapsed"] < 5, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "bomb") == ["exit 0"]
    bystander.assert_unharmed()


def test_fork_bomb_is_contained_and_killed_at_the_run_timeout(faas, faasd, bystander):
    """Every process forks forever and nobody answers. The container never holds more
    than 32 processes, faasd keeps serving hello meanwhile, and the run timeout (2 s)
    kills the lot: the client's connection closes without an answer."""
    d = deploy(faas, "bomb", "fork-bomb", "--pids", "32", "--timeout", "2s")
    bystander.mark()
    client = spawn_client(faas, d.ip, path="/bomb", timeout=30)
    [cid] = wait_for(lambda: faasd.runc_containers(), 10, what="the bomb's container")
    assert cgroup_file(faas, cid, "pids", "pids.max") == "32"
    # The bomb reaches its limit, and not past it.
    peak = wait_for(lambda: (n := int(cgroup_file(faas, cid, "pids", "pids.current"))) >= 30
                    and n, 5, what="the bomb to fill its pids limit")
    assert peak <= 32
    faas.assert_handler_responds(bystander.ip)
    r = client_result(client)
    assert_closed_without_answer(r)
    assert 1.9 <= r["elapsed"] <= 8, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "bomb") == ["run timeout"]
    assert "handler still running after 2000 ms" in faasd.log()
    bystander.assert_unharmed()


def test_memory_hog_is_oom_killed(faas, faasd, bystander):
    """memory-hog touches 1 GiB against the 512 MiB limit: the kernel kills it and the
    client's connection closes without an answer."""
    d = deploy(faas, "hog", "memory-hog")
    bystander.mark()
    r = faas.make_request(d.ip, timeout=60)
    assert "survived" not in (r["body"] or ""), f"the memory limit was not enforced: {r}"
    assert_closed_without_answer(r)
    assert r["elapsed"] < 30, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "hog") in (["exit 137"], ["killed by signal 9"])
    bystander.assert_unharmed()


def test_cpu_spin_is_killed_at_the_run_timeout(faas, faasd, bystander):
    """A handler spinning on its CPU is killed 2 s after the handover (--timeout 2s),
    and hello answers while it spins."""
    d = deploy(faas, "spin", "cpu-spin", "--timeout", "2s")
    bystander.mark()
    handovers = faasd.log().count("handed the client over")
    client = spawn_client(faas, d.ip, timeout=30)
    wait_for(lambda: faasd.log().count("handed the client over") > handovers, 10,
             what="the handover to the spinning handler")
    faas.assert_handler_responds(bystander.ip)
    r = client_result(client)
    assert_closed_without_answer(r)
    assert 1.9 <= r["elapsed"] <= 8, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "spin") == ["run timeout"]
    assert "spin faas-" in faasd.log() and "handler still running after 2000 ms" in faasd.log()
    bystander.assert_unharmed()


def test_never_connecting_handler_gets_504_at_the_connect_timeout(faas, faasd, bystander):
    d = deploy(faas, "lazy", "never-connects", "--connect-timeout", "1s", "--no-start-check")
    bystander.mark()
    r = faas.make_request(d.ip, timeout=20)
    assert r["status"] == 504 and r["complete"], r
    assert r["body"] == "Gateway Timeout\n"
    assert 0.9 <= r["elapsed"] <= 5, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "lazy") == ["connect timeout"]
    bystander.assert_unharmed()


def test_handler_holding_the_client_forever_is_killed_at_the_run_timeout(faas, faasd,
                                                                          bystander):
    d = deploy(faas, "stuck", "sleeps-forever", "--timeout", "2s")
    bystander.mark()
    r = faas.make_request(d.ip, timeout=30)
    assert_closed_without_answer(r)
    assert 1.9 <= r["elapsed"] <= 8, r
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "stuck") == ["run timeout"]
    bystander.assert_unharmed()


# --- the filesystem --------------------------------------------------------------------

def snapshot_tree(faas, root):
    paths = [root] + [f"{root}/{p}" for p in faas.tree(root)]
    return faas.stat(*paths)


def test_writes_to_the_read_only_root_fail_with_erofs(faas, faasd, bystander):
    d = deploy(faas, "ro", "rofs-writer")
    bystander.mark()
    fn_dir = f"{faasd.state_dir}/images/ro"
    before = snapshot_tree(faas, f"{fn_dir}/v1")
    r = faas.make_request(d.ip)
    assert answer_lines(r) == {
        "create": "EROFS",
        "mkdir": "EROFS",
        "append_handler": "ETXTBSY",  # the running binary: refused before the mount check
        "truncate_handler": "EROFS",
        "chmod_handler": "EROFS",
        "chown_handler": "EROFS",
        "utimes_handler": "EROFS",
        "rename_handler": "EROFS",
        "unlink_handler": "EROFS",
        "link_handler": "EROFS",
        "symlink": "EROFS",
        "mkfifo": "EROFS",
        "rmdir_proc": "EROFS",
        "write_proc_sys": "EROFS",
        "create_sys": "EROFS",
        "create_tmp": "ok",
        "unlink_tmp": "ok",
    }
    faas.wait_for_cleanup()
    # The rootfs on the host is exactly as it was: same entries, inodes, modes, times.
    assert snapshot_tree(faas, f"{fn_dir}/v1") == before
    assert faas.vm.listdir(fn_dir) == ["rootfs", "v1"]
    assert request_outcomes(faasd, "ro") == ["exit 0"]
    bystander.assert_unharmed()


# --- the network -----------------------------------------------------------------------

def test_network_is_unreachable_from_a_handler(faas, faasd, bystander):
    """The container's netns has nothing but its own lo: no route to any 10.x address
    (in particular not the hello function's), no raw or packet sockets, no interface
    configuration. (docs/HANDLER_PROTOCOL.md says "no interface up", but runc brings
    the new netns' lo up, so 127.0.0.1 is reachable, and refuses: nobody listens.)"""
    d = deploy(faas, "net", "net-probe")
    bystander.mark()
    hello_requests = len(request_ids(faasd, "hello"))
    r = faas.make_request(d.ip, path=f"/{bystander.ip}")
    assert answer_lines(r) == {
        "tcp_10.0.0.1": "ENETUNREACH",
        "tcp_127.0.0.1": "ECONNREFUSED",  # the container's own lo
        "tcp_::1": "ECONNREFUSED",
        "udp_10.0.0.1": "ENETUNREACH",
        "raw_icmp": "EPERM",
        "raw_tcp": "EPERM",
        "packet": "EAFNOSUPPORT",  # the seccomp profile, before the capability check
        "lo_up": "EPERM",
        f"tcp_{bystander.ip}": "ENETUNREACH",
    }
    faas.wait_for_cleanup()
    # hello never saw a connection from it.
    assert len(request_ids(faasd, "hello")) == hello_requests
    bystander.assert_unharmed()


# --- system calls ----------------------------------------------------------------------

def seccomp_probe(faas, bystander, path):
    """Deploys seccomp-probe and returns its answer to `path` as {call: outcome}."""
    d = deploy(faas, "sc", "seccomp-probe")
    bystander.mark()
    return answer_lines(faas.make_request(d.ip, path=path))


def test_seccomp_denied_calls_fail_with_eperm(faas, faasd, bystander):
    facts = seccomp_probe(faas, bystander, "/")
    assert facts == {call: "EPERM" for call in (
        "unshare_mount", "unshare_user", "unshare_net", "mount_tmpfs", "remount_root_rw",
        "umount_tmp", "ptrace_traceme", "ptrace_attach_1", "setns", "chroot", "pivot_root",
        "bpf", "add_key", "keyctl", "io_uring_setup", "perf_event_open", "init_module",
        "clock_settime", "settimeofday", "reboot", "swapon", "userfaultfd",
        "open_by_handle_at")}, facts
    bystander.assert_unharmed()


def test_socket_only_for_unix_and_ip_families(faas, faasd, bystander):
    """Regression: socket() was allowed for every family (AF_VSOCK reached the host's
    hypervisor sockets from a handler). Now unix, inet and inet6 work, every other family
    fails with EAFNOSUPPORT (as under Docker's profile), and socketpair() works for unix
    only. Netlink is refused too: glibc's getaddrinfo copes without it."""
    facts = seccomp_probe(faas, bystander, "/socket")
    assert facts == {"socket_unix": "ok", "socket_inet": "ok", "socket_inet6": "ok",
                     "socket_vsock": "EAFNOSUPPORT", "socket_packet": "EAFNOSUPPORT",
                     "socket_netlink": "EAFNOSUPPORT", "socket_bluetooth": "EAFNOSUPPORT",
                     "socket_alg": "EAFNOSUPPORT", "socket_negative": "EAFNOSUPPORT",
                     "socketpair_unix": "ok", "socketpair_inet": "EAFNOSUPPORT"}, facts
    bystander.assert_unharmed()


def test_clone_cannot_create_namespaces(faas, faasd, bystander):
    """docs/HANDLER_PROTOCOL.md: "a seccomp allowlist (no mount, namespaces, ...: such
    calls fail with EPERM)". unshare() and setns() are refused, but clone() and clone3()
    asking for new namespaces must be refused too, or a handler can still create a user
    namespace (no capability needed) and, inside it, network and mount namespaces in
    which it holds every capability (net_admin_in_new_netns: it brings a lo up).

    Regression: "clone" and "clone3" used to be allowed with any flags. clone is now
    allowed only without namespace flags (SCMP_CMP_MASKED_EQ on arg 0) and clone3
    fails with ENOSYS (its flags sit in memory seccomp cannot read; libc falls back
    to clone). CLONE_NEWTIME cannot be passed to clone (its low byte is the exit
    signal), only to clone3 and unshare, both refused."""
    facts = seccomp_probe(faas, bystander, "/clone")
    assert facts == {"clone_newuser": "EPERM", "clone_newnet": "EPERM", "clone_newns": "EPERM",
                     "clone_newuser_newnet": "EPERM", "clone3_newuser": "ENOSYS",
                     "net_admin_in_new_netns": "EPERM"}, facts
    bystander.assert_unharmed()


# --- the control socket ----------------------------------------------------------------

def test_second_connect_to_the_control_socket_is_refused(faas, faasd, bystander):
    """After the handover faasd's listener is gone: a second connect is refused (or
    reset), and the client the first one delivered still works (it carries the answer)."""
    d = deploy(faas, "twice", "control-twice")
    bystander.mark()
    r = faas.make_request(d.ip)
    facts = answer_lines(r)
    # faasd sends the client before it closes its listener: a connect in that window
    # is queued, then reset when the listener goes. Either way no second client.
    assert facts in ({"first": "ok", "second_connect": "ECONNREFUSED"},
                     {"first": "ok", "second_connect": "ok", "second_fd": "none:ECONNRESET"}), facts
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "twice") == ["exit 0"]
    bystander.assert_unharmed()


def test_two_connects_before_the_handover_deliver_one_client(faas, faasd, bystander):
    """Two connections at once: the first delivers the client, the second never does
    (whichever way it fails depends on how far faasd got meanwhile)."""
    d = deploy(faas, "race", "control-twice", "--env", "CONTROL_TWICE_MODE=race")
    bystander.mark()
    r = faas.make_request(d.ip)
    facts = answer_lines(r)
    assert facts["first"] == "ok", facts
    if facts["second_connect"] == "ok":
        # Queued behind the first: faasd never accepts it, no client comes through it.
        assert facts["second_fd"] in ("none:EOF", "none:ECONNRESET"), facts
    else:
        # The backlog (1) was full, or faasd had already handed over and closed.
        assert facts["second_connect"] in ("EAGAIN", "ECONNREFUSED"), facts
        assert "second_fd" not in facts, facts
    faas.wait_for_cleanup()
    assert request_outcomes(faasd, "race") == ["exit 0"]
    bystander.assert_unharmed()


# --- output ----------------------------------------------------------------------------

def test_output_flood_is_capped_in_the_log_and_drained(faas, faasd, bystander):
    """50 MB on stdout and stderr: the request completes; faasd's own log carries none
    of it; the function's log keeps what its budget allows, stays within --log-size on
    disk, and says how many lines it dropped."""
    d = deploy(faas, "flood", "log-flood")
    bystander.mark()
    log_before = len(faasd.log().encode())
    r = faas.make_request(d.ip, timeout=60)
    assert r["status"] == 200 and r["complete"], r
    assert r["body"] == "flooded stdout=26214400 stderr=26214400\n"
    assert r["elapsed"] < 30, r
    faas.wait_for_cleanup()
    growth = len(faasd.log().encode()) - log_before
    assert growth <= 24 << 10, f"faasd's log grew by {growth} bytes for one flooding request"
    assert request_outcomes(faasd, "flood") == ["exit 0"]

    def dropped():
        r = faasd.faas("logs", "flood", "--json", check=True)
        return [rec["line"] for rec in map(json.loads, r.stdout.splitlines())
                if rec["stream"] == "faasd"]
    markers = wait_for(dropped, 10, what="the function log's dropped-lines marker")
    assert all(m.endswith(" lines dropped") for m in markers), markers
    assert sum(int(m.split()[0]) for m in markers) > 0
    used = faas.vm.run(["du", "-sb", f"{faasd.state_dir}/logs/flood"]).stdout.split()[0]
    assert int(used) <= 8 << 20, f"the flood's log takes {used} bytes on disk"
    bystander.assert_unharmed()
