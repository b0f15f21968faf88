"""Self-tests of the qemu VM backend (tests/lib/qemu_vm.py, tests/lib/vmagent.py).

They run only with --vm=qemu (or FAASD_VMTEST_DIRECT=1, which makes this module build
its QemuVM itself, for use before --vm=qemu is wired into conftest):

    /usr/bin/python3 -m pytest -m vmtest --vm=qemu tests/vmtest_backend
    FAASD_VMTEST_DIRECT=1 /usr/bin/python3 -m pytest tests/vmtest_backend

The module overrides the `vm` fixture so the conftest fixtures built on it (faasd, faas)
use a QemuVM here either way.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from lib.helpers import hello_body
from lib.vm import CommandFailed, VMError, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.vmtest]


def _qemu_enabled(config) -> bool:
    return config.getoption("--vm") == "qemu" or os.environ.get("FAASD_VMTEST_DIRECT") == "1"


@pytest.fixture
def vm(request, tmp_path):
    if not _qemu_enabled(request.config):
        pytest.skip("vmtest: needs --vm=qemu")
    from lib.qemu_vm import QemuVM
    machine = QemuVM(tmp_path / "vm")
    try:
        yield machine
    finally:
        machine.close()


def _host_addresses():
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


# --- commands ---------------------------------------------------------------------------

def test_run_returns_rc_stdout_stderr(vm):
    r = vm.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert r.args == ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]
    with pytest.raises(CommandFailed) as e:
        vm.run(["sh", "-c", "exit 4"])
    assert e.value.result.returncode == 4
    assert vm.run(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    assert vm.run(["cat"], input=b"from stdin").stdout == "from stdin"
    assert vm.run(["cat"], input="text too").stdout == "text too"
    r = vm.run(["head", "-c", "3", "/dev/zero"], text=False)
    assert (r.stdout, r.stdout_bytes) == ("", b"\0\0\0")
    # Like subprocess: death by a signal is -N.
    assert vm.run("kill -9 $$", check=False).returncode == -signal.SIGKILL
    assert vm.run(["/nonexistent/prog"], check=False).returncode == 127
    big = os.urandom(3 << 20)
    r = vm.run(["sha256sum"], input=big)
    assert r.stdout.split()[0] == hashlib.sha256(big).hexdigest()


def test_run_timeout_kills_the_whole_command(vm):
    t0 = time.monotonic()
    with pytest.raises(VMError, match="timed out after 2 s"):
        vm.run("sleep 300 & sleep 301; echo never", timeout=2)
    assert time.monotonic() - t0 < 15
    # Both sleeps (the session of the command) are gone; the guest still answers.
    assert vm.run("ps -eo args | grep -c '^sleep 30[01]'", check=False).stdout.strip() == "0"
    assert vm.run(["echo", "alive"]).stdout == "alive\n"


def test_concurrent_commands_run_in_parallel(vm):
    results, errors = [], []

    def one(i):
        try:
            results.append(vm.run(["sh", "-c", f"sleep 2; echo {i}"]).stdout.strip())
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == ["0", "1", "2", "3"]
    assert time.monotonic() - t0 < 7.5, "the agent serialised the commands"


def test_spawn_kill_wait_and_logs(vm):
    p = vm.spawn(["sh", "-c", "echo started; echo to-stderr >&2; exec sleep 300"], log_name="sl")
    assert p.poll() is None and p.returncode is None
    wait_for(lambda: (p.stdout_text(), p.stderr_text()) == ("started\n", "to-stderr\n"), 20,
             what="the spawned process's output")
    assert str(p.stdout_path).startswith("/") and p.stdout_path.exists()  # a host file
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.5)
    # The pid is the guest's: the process is visible there under it.
    assert vm.run(["cat", f"/proc/{p.pid}/comm"]).stdout == "sleep\n"
    p.kill(signal.SIGTERM)
    assert p.wait(timeout=20) == -signal.SIGTERM
    assert p.poll() == -signal.SIGTERM
    p.kill()  # already gone: a no-op
    q = vm.spawn("exit 7")
    assert q.wait(timeout=20) == 7
    # kill_spawned spares `keep`.
    a, b = vm.spawn(["sleep", "300"]), vm.spawn(["sleep", "301"])
    vm.kill_spawned(keep={b.pid})
    assert a.poll() == -signal.SIGKILL and b.poll() is None
    b.ensure_dead()
    assert b.poll() == -signal.SIGKILL


# --- files ------------------------------------------------------------------------------

def test_write_and_read_files(vm):
    path = f"{vm.run_dir}/small"
    vm.write_file(path, b"hello\n", mode=0o600)
    assert vm.read_file(path) == b"hello\n"
    assert vm.run(["stat", "-c", "%a %s", path]).stdout == "600 6\n"
    big = os.urandom(5 << 20)  # through the 9p xfer share
    vm.write_file(f"{vm.state_dir}/big", big)
    assert vm.run(["sha256sum", f"{vm.state_dir}/big"]).stdout.split()[0] == \
        hashlib.sha256(big).hexdigest()
    assert vm.read_file(f"{vm.state_dir}/big") == big
    with pytest.raises(FileNotFoundError):
        vm.read_file(f"{vm.run_dir}/missing")
    with pytest.raises(FileNotFoundError):
        vm.write_file(f"{vm.run_dir}/no/such/dir", b"x")
    with pytest.raises(VMError):
        vm.read_file("relative/path")
    assert vm.exists(path) and not vm.exists(f"{vm.run_dir}/missing")
    assert sorted(vm.listdir(vm.run_dir)) == ["small"]


def test_import_file_sees_current_host_bytes(vm, tmp_path):
    # Created after the boot: the guest's cached root share may not show it; the
    # backend must hand out a path with these exact bytes anyway.
    host = tmp_path / "fresh.bin"
    data = os.urandom(200000)
    host.write_bytes(data)
    os.chmod(host, 0o755)
    path = vm.import_file(str(host))
    assert vm.run(["sha256sum", path]).stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert vm.run(["test", "-x", path], check=False).returncode == 0
    host.write_bytes(b"changed")
    assert vm.read_file(vm.import_file(str(host))) == b"changed"
    # A file unchanged since before the boot is used in place, through the root share.
    assert vm.import_file("/usr/bin/busybox") == "/usr/bin/busybox"


# --- the guest is a real, separate machine -----------------------------------------------

def test_guest_has_its_own_kernel_and_network(vm):
    assert vm.run(["uname", "-r"]).stdout.strip() != os.uname().release
    assert vm.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip() != \
        open("/proc/sys/kernel/random/boot_id").read().strip()
    assert vm.read_file("/proc/1/cmdline").split(b"\0")[:2] == [b"/usr/bin/busybox", b"init"]
    links = json.loads(vm.run(["ip", "-j", "addr"]).stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    guest = {a["local"] for link in links for a in link.get("addr_info", [])}
    assert guest == {"127.0.0.1", "::1"}
    assert not (_host_addresses() - {"127.0.0.1", "::1"}) & guest
    # Guest writes stay in the guest.
    marker = f"/tmp/vmtest-marker-{os.getpid()}"
    vm.run(["sh", "-c", f"echo x > {marker}"])
    assert vm.exists(marker) and not os.path.exists(marker)


def test_state_and_run_dirs_are_fresh_tmpfs(vm):
    mounts = {line.split()[1]: line.split()[2]
              for line in vm.run(["cat", "/proc/self/mounts"]).stdout.splitlines()}
    assert mounts[vm.state_dir] == "tmpfs" and mounts[vm.run_dir] == "tmpfs"
    assert mounts["/sys/fs/cgroup"] == "cgroup2"
    assert vm.listdir(vm.state_dir) == [] and vm.listdir(vm.run_dir) == []
    assert os.listdir(vm.state_dir) == []  # empty directories on the host


# The guest's root is the host's, so both runtimes the suite can run (--runtime) are
# there; crun, unlike on a hybrid host, works with the guest's cgroup v2.
@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_runtime_runs_a_busybox_container(vm, runtime):
    bundle = f"{vm.run_dir}/bundle"
    vm.run(f"set -e; mkdir -p {bundle}/rootfs/bin; cp /usr/bin/busybox {bundle}/rootfs/bin/; "
           f"for a in sh echo id hostname cat; do ln -s busybox {bundle}/rootfs/bin/$a; done; "
           f"cd {bundle} && {runtime} spec")
    spec = json.loads(vm.read_file(f"{bundle}/config.json"))
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/sh", "-c",
                               "echo in-container; id -u; hostname; cat /proc/self/cgroup"]
    spec["linux"]["cgroupsPath"] = "/vmtest/c1"
    spec["linux"].setdefault("resources", {})["pids"] = {"limit": 32}
    vm.write_file(f"{bundle}/config.json", json.dumps(spec).encode())
    root = f"{vm.run_dir}/{runtime}"
    r = vm.run([runtime, "--root", root, "run", "-b", bundle, "c1"], timeout=120)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["in-container", "0", runtime], r
    assert lines[3] == "0::/", r  # its own cgroup namespace
    assert vm.run([runtime, "--root", root, "list", "-q"]).stdout == ""


def test_faasd_serves_hello_in_the_guest(faas, faasd, vm):
    before = _host_addresses()
    d = faas.deploy_handler("hello")
    assert d.ip == "10.0.0.10"
    faas.assert_handler_responds(d.ip)
    assert faasd.faas_addresses() == ["10.0.0.10"]
    assert _host_addresses() == before
    r = faas.make_request(d.ip)
    assert r["status"] == 200 and r["body"] == hello_body()


# --- cleanup, wedges and crashes -----------------------------------------------------------

def test_close_cleans_the_guest_and_reports_faasd_leftovers(vm, tmp_path):
    from lib.qemu_vm import QemuVM
    other = QemuVM(tmp_path / "other")
    assert other.machine is vm.machine
    other.run(["ip", "addr", "add", "10.0.0.99/24", "dev", "lo", "label", "lo:faas"])
    other.run(["ip", "link", "add", "vt0", "type", "veth", "peer", "name", "vt1"])
    other.run(["mkdir", "/sys/fs/cgroup/leftover"])
    # A process naming the test's run dir looks like a leaked runc/faasd helper. It loops,
    # so killing its sleep first (the cleanup kills in any order) does not end it.
    other.run(f"setsid sh -c 'while :; do sleep 1; done' leak {other.run_dir} "
              "</dev/null >/dev/null 2>&1 &")
    other.spawn(["sleep", "999"])
    with pytest.raises(VMError, match="faasd/runc processes were still running"):
        other.close()
    assert vm.run("ps -eo args | grep -c '^sleep'", check=False).stdout.strip() == "0"
    links = json.loads(vm.run(["ip", "-j", "addr"]).stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert [a["local"] for a in links[0]["addr_info"] if a["family"] == "inet"] == ["127.0.0.1"]
    assert not vm.exists("/sys/fs/cgroup/leftover")
    assert other.run_dir not in vm.run(["cat", "/proc/self/mounts"]).stdout


@pytest.mark.slow
def test_wedged_agent_fails_alone_and_the_next_vm_is_fresh(vm, tmp_path):
    from lib.qemu_vm import AgentTimeout, QemuVM
    old_boot = vm.boot_id
    agent_pid = vm.machine.request("ping")["pid"]
    # Stop the agent from a detached process (the reply to this run still arrives first).
    vm.run(f"(sleep 0.5; kill -STOP {agent_pid}) </dev/null >/dev/null 2>&1 &")
    time.sleep(3)
    with pytest.raises(AgentTimeout, match="wedged"):
        vm.machine.request("ping", wait=3)
    with pytest.raises(VMError, match="unusable"):
        vm.run(["true"])
    vm.close()   # shuts the broken guest down
    assert not vm.machine.alive()
    shutil.rmtree(vm.machine.dir, ignore_errors=True)  # kept for post-mortems otherwise
    fresh = QemuVM(tmp_path / "fresh")
    try:
        assert fresh.boot_id != old_boot
        assert fresh.run(["echo", "ok"]).stdout == "ok\n"
    finally:
        fresh.close()


@pytest.mark.slow
def test_kernel_panic_is_detected_and_rebooted(vm, tmp_path):
    from lib.qemu_vm import MachineDead
    old_boot = vm.boot_id
    with pytest.raises(MachineDead) as e:
        vm.run("echo c > /proc/sysrq-trigger; sleep 60", timeout=90)
    assert "Kernel panic" in str(e.value) or "sysrq" in str(e.value).lower(), str(e.value)
    broken_dir = vm.machine.dir
    vm.reboot()
    shutil.rmtree(broken_dir, ignore_errors=True)  # kept for post-mortems otherwise
    assert vm.boot_id != old_boot
    assert vm.run(["echo", "back"]).stdout == "back\n"
    assert vm.listdir(vm.run_dir) == []
