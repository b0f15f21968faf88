"""The `qemu` VM backend: the interface of tests/lib/vm.py backed by a real Linux guest.

    QemuVM(work_dir)      the per-test VM object (same methods, arguments, return types and
                          exceptions as SandboxVM). It borrows the session's guest, booted
                          on first use; close() cleans the guest for the next test.
    Machine               one qemu process: boot, the agent connection, QMP shutdown.
    check_host()          what is missing on this host to run --vm=qemu ([] when nothing).
    detect_accel()        ("kvm" | "tcg", why): KVM only when it really boots a guest.
    shutdown_session()    stops the session's guest (also registered with atexit).

The guest (see tests/lib/initramfs.py): the Debian kernel from /boot booted directly
(uncompressed PVH vmlinux), a busybox initramfs, the host's / shared read-only over
virtio-9p with an overlay on tmpfs (guest writes go to RAM), a writable 9p share of a
host temp dir on /mnt/xfer, cgroup v2, busybox init as PID 1 respawning the agent
(tests/lib/vmagent.py) on a virtio-serial port. Commands run through that agent; files
move through /mnt/xfer (small ones inline).

Per test: fresh tmpfs state and run dirs at /tmp/faasd-vm.XXXX/{state,run} (empty
directories on the host, like the sandbox). close() SIGKILLs what the test spawned, then
the agent kills every other process (except init and itself), unmounts the test's
tmpfs, removes all cgroups and resets lo. A leftover faasd/runc process at that point is
reported as a VMError (after cleaning). A guest that stops answering (the agent misses a
deadline, qemu or the kernel died) marks the machine broken: that test fails with the
serial console tail, and the next QemuVM boots a new guest.

Environment: FAASD_VM_ACCEL=kvm|tcg (skip detection), FAASD_VM_MEM (MiB, default 2048),
FAASD_VM_SMP (default min(2, cpus)), FAASD_VM_BOOT_TIMEOUT (s, default 120),
FAASD_VM_KERNEL (a /boot/vmlinuz-KVER version), FAASD_VM_CACHE (/tmp/faasd-vm-cache),
FAASD_VM_KEEP=1 (keep the machine's run dir with console.log after shutdown).
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from . import initramfs
from .vm import VM, Cmd, CommandFailed, RunResult, Spawned, VMError, _argv

LIB_DIR = Path(__file__).resolve().parent
AGENT = LIB_DIR / "vmagent.py"
QEMU = "qemu-system-x86_64"
XFER_GUEST = "/mnt/xfer"
INLINE_MAX = 256 * 1024           # bigger payloads travel through the 9p xfer share
GRACE = 30                        # s the host waits beyond a command's own timeout
KERNEL_ARGS = ("console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable no_timer_check "
               "i8042.noaux i8042.nokbd cryptomgr.notests")


class AgentTimeout(VMError):
    """The guest agent missed a deadline: the guest is considered wedged."""


class MachineDead(VMError):
    """qemu exited or the agent connection broke."""


# --- host checks and acceleration ------------------------------------------------------

def check_host() -> list:
    """Problems that prevent --vm=qemu on this host ([] when it can run)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root")
    if not shutil.which(QEMU):
        problems.append(f"{QEMU} not found: apt-get install qemu-system-x86")
    try:
        kver = initramfs.pick_kernel()
        if not Path(f"/boot/vmlinuz-{kver}").exists():
            problems.append(f"/boot/vmlinuz-{kver} missing")
        initramfs.module_load_order(kver)
    except (OSError, RuntimeError) as e:
        problems.append(f"guest kernel: {e}")
    try:
        initramfs.find_busybox()
    except OSError as e:
        problems.append(str(e))
    if not os.access("/usr/bin/python3", os.X_OK):
        problems.append("/usr/bin/python3 missing (the guest agent runs with it)")
    if not AGENT.exists():
        problems.append(f"{AGENT} missing")
    return problems


def _kvm_ioctl_ok() -> Optional[str]:
    """None when /dev/kvm answers KVM_GET_API_VERSION and KVM_CREATE_VM (cannot hang)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open /dev/kvm: {e}"
    try:
        version = fcntl.ioctl(fd, 0xAE00)           # KVM_GET_API_VERSION
        if version != 12:
            return f"KVM API version {version}, expected 12"
        vmfd = fcntl.ioctl(fd, 0xAE01, 0)           # KVM_CREATE_VM
        os.close(vmfd)
    except OSError as e:
        return f"KVM ioctl failed: {e}"
    finally:
        os.close(fd)
    return None


def detect_accel(kver: Optional[str] = None, probe_timeout: float = 15) -> tuple:
    """("kvm"|"tcg", reason). KVM is used only when a probe guest with this very kernel
    boots under it (stock kernels hang or abort under nested kvm-pvm, for example).
    The verdict is cached per host kernel and guest kernel in the cache dir."""
    forced = os.environ.get("FAASD_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "forced by FAASD_VM_ACCEL"
    if not os.path.exists("/dev/kvm"):
        return "tcg", "no /dev/kvm"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "tcg", ("/dev/kvm is kvm-pvm (nested PVM), which only runs PVM-enabled guest "
                       "kernels: stock kernels abort or hang")
    err = _kvm_ioctl_ok()
    if err:
        return "tcg", err
    kver = kver or initramfs.pick_kernel()
    initramfs.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    verdict_file = initramfs.CACHE_DIR / f"accel-{os.uname().release}-{kver}.json"
    try:
        v = json.loads(verdict_file.read_text())
        return v["accel"], v["reason"] + " (cached)"
    except (OSError, ValueError, KeyError):
        pass
    accel, reason = _probe_kvm(kver, probe_timeout)
    verdict_file.write_text(json.dumps({"accel": accel, "reason": reason}))
    return accel, reason


def _probe_kvm(kver: str, timeout: float) -> tuple:
    kernel = initramfs.kernel_image(kver)
    initrd = initramfs.build_initramfs(kver)
    with tempfile.TemporaryDirectory(prefix="faasd-kvm-probe.") as d:
        console = Path(d) / "console.log"
        cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256",
               "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-kernel", str(kernel), "-initrd", str(initrd),
               "-append", f"{KERNEL_ARGS} vmt.probe=1", "-serial", f"file:{console}"]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_parent)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return "tcg", f"a KVM probe guest did not boot within {timeout} s"
        ok = console.exists() and "VMT-PROBE-OK" in console.read_text(errors="replace")
        if ok:
            return "kvm", f"a KVM probe guest booted in {time.monotonic() - t0:.1f} s"
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        return "tcg", f"a KVM probe guest failed (rc {p.returncode}): {' | '.join(tail)}"


def _die_with_parent():
    """preexec_fn: qemu gets SIGKILL when the thread that started it dies (even by
    SIGKILL), so an interrupted pytest never leaks a guest."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


# --- one qemu guest --------------------------------------------------------------------

class Machine:
    """One qemu guest and its agent connection. Thread-safe requests."""

    def __init__(self, memory_mb: Optional[int] = None, smp: Optional[int] = None,
                 accel: Optional[str] = None, serial_stdio: bool = False,
                 shell_on_serial: bool = False, boot_timeout: Optional[float] = None):
        self.kver = initramfs.pick_kernel()
        self.memory_mb = int(memory_mb or os.environ.get("FAASD_VM_MEM", 2048))
        self.smp = int(smp or os.environ.get("FAASD_VM_SMP", min(2, os.cpu_count() or 1)))
        if accel:
            self.accel, self.accel_reason = accel, "requested"
        else:
            self.accel, self.accel_reason = detect_accel(self.kver)
        self.serial_stdio = serial_stdio
        self.shell_on_serial = shell_on_serial
        self.boot_timeout = float(boot_timeout or os.environ.get("FAASD_VM_BOOT_TIMEOUT", 120))
        self.grace = GRACE   # s the host waits for a reply beyond a command's own timeout
        _prune_run_dirs()
        self.dir = Path(tempfile.mkdtemp(prefix="faasd-qemu.", dir="/tmp"))
        (self.dir / "owner").write_text(f"{os.getpid()}\n")
        self.xfer = self.dir / "xfer"
        for sub in ("logs", "tmp", "import"):
            (self.xfer / sub).mkdir(parents=True)
        self.console_path = self.dir / "console.log"
        self.qemu_log_path = self.dir / "qemu.log"
        self.agent_sock = self.dir / "agent.sock"
        self.qmp_sock = self.dir / "qmp.sock"
        self.proc: Optional[subprocess.Popen] = None
        self.broken: Optional[str] = None   # why the guest cannot be trusted any more
        self.boot_seconds: Optional[float] = None
        self.boot_started: Optional[float] = None  # time.time() when qemu started
        self.boot_id: Optional[str] = None
        self._sock: Optional[socket.socket] = None
        self._reader: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._next_id = 0
        self._replies: dict = {}
        self._exits: dict = {}               # spawn handle -> rc
        self._dead: Optional[str] = None    # why the connection is gone
        self._closed = False
        self._import_cache: dict = {}

    # --- boot ------------------------------------------------------------------------
    def command_line(self) -> list:
        kernel = initramfs.kernel_image(self.kver)
        initrd = initramfs.build_initramfs(self.kver)
        append = f"{KERNEL_ARGS} vmt.agent={AGENT} vmt.hostname=faasd-vm"
        if self.shell_on_serial:
            append += " vmt.shell=1"
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,tb-size=64"]
        serial = ["-serial", "mon:stdio"] if self.serial_stdio else \
            ["-serial", f"file:{self.console_path}"]
        return [QEMU, *accel, "-machine", "q35", "-m", str(self.memory_mb),
                "-smp", str(self.smp), "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
                *serial,
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                           "multidevs=remap",
                "-virtfs", f"local,path={self.xfer},mount_tag=xfer,security_model=none,"
                           "multidevs=remap",
                "-device", "virtio-rng-pci", "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=agent,path={self.agent_sock},server=on,wait=off",
                "-device", "virtserialport,chardev=agent,name=vmt.agent",
                "-qmp", f"unix:{self.qmp_sock},server=on,wait=off"]

    def boot(self) -> "Machine":
        cmd = self.command_line()
        self.boot_started = time.time()
        t0 = time.monotonic()
        log = open(self.qemu_log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=None if self.serial_stdio else subprocess.DEVNULL,
                stdout=None if self.serial_stdio else log, stderr=log,
                start_new_session=not self.serial_stdio, preexec_fn=_die_with_parent)
        finally:
            log.close()
        _LIVE.add(self)
        try:
            self._connect(t0 + self.boot_timeout)
            reply = self._wait_ping(t0 + self.boot_timeout)
        except BaseException:
            self.shutdown()
            raise
        self.boot_seconds = time.monotonic() - t0
        self.boot_id = reply.get("boot_id")
        return self

    def _connect(self, deadline: float) -> None:
        while True:
            self._check_qemu("while booting")
            if self.agent_sock.exists():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(self.agent_sock))
                    break
                except OSError:
                    s.close()
            if time.monotonic() > deadline:
                raise VMError(f"qemu did not open the agent socket within {self.boot_timeout} s"
                              + self.diagnostics())
            time.sleep(0.02)
        self._sock = s
        self._reader = threading.Thread(target=self._read_loop, args=(s,), daemon=True,
                                        name="qemu-agent-reader")
        self._reader.start()

    def _wait_ping(self, deadline: float) -> dict:
        # Bytes sent before the guest opens the port are held by qemu; still, re-ping
        # every few seconds in case the agent restarted meanwhile.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VMError(f"the guest agent did not answer within {self.boot_timeout} s "
                              f"of qemu's start" + self.diagnostics())
            try:
                return self.request("ping", wait=min(5.0, remaining), _booting=True)
            except AgentTimeout:
                continue

    def _check_qemu(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise MachineDead(f"qemu exited with {self.proc.returncode} {when}"
                              + self.diagnostics())

    # --- agent transport ---------------------------------------------------------------
    def _read_loop(self, s: socket.socket) -> None:
        reason = "the agent connection closed"
        try:
            rf = s.makefile("rb")   # buffered: unbuffered readline() is one recv per byte
            for line in rf:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("event") == "exit":
                        self._exits[msg["handle"]] = msg["rc"]
                    elif "id" in msg:
                        self._replies[msg["id"]] = msg
                    self._cond.notify_all()
        except (OSError, ValueError) as e:
            reason = f"the agent connection failed: {e}"
        with self._cond:
            self._dead = self._dead or reason
            self._cond.notify_all()

    def request(self, op: str, wait: Optional[float] = 60, _booting: bool = False,
                **fields) -> dict:
        """Sends one request; returns the reply. Raises AgentTimeout (and marks the
        machine broken) when no reply comes within `wait` s (None: no deadline)."""
        if self.broken and not _booting:
            raise MachineDead(f"the guest is unusable: {self.broken}")
        with self._cond:
            if self._dead:
                raise MachineDead(self._dead + self.diagnostics())
            self._next_id += 1
            rid = self._next_id
        data = (json.dumps({"id": rid, "op": op, **fields}, separators=(",", ":")) + "\n").encode()
        try:
            with self._send_lock:   # one writer at a time: lines must not interleave
                self._sock.sendall(data)
        except OSError as e:
            self.broken = f"cannot send to the agent: {e}"
            raise MachineDead(self.broken + self.diagnostics()) from None
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while rid not in self._replies:
                if self._dead:
                    self.broken = self._dead
                    raise MachineDead(self._dead + self.diagnostics())
                if self.proc is not None and self.proc.poll() is not None:
                    self.broken = f"qemu exited with {self.proc.returncode}"
                    raise MachineDead(self.broken + self.diagnostics())
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    if not _booting:
                        self.broken = (f"the agent did not answer a {op!r} request within "
                                       f"{wait:.0f} s")
                        raise AgentTimeout(f"the guest is wedged: {self.broken}"
                                           + self.diagnostics())
                    raise AgentTimeout("no answer yet")
                self._cond.wait(remaining)
            reply = self._replies.pop(rid)
        err = reply.get("error")
        if err:
            if err.get("errno"):
                raise OSError(err["errno"], err.get("strerror") or err.get("message"),
                              fields.get("path"))
            raise VMError(f"agent {op} failed: {err.get('type')}: {err.get('message')}")
        return reply

    def exit_code(self, handle: int) -> Optional[int]:
        with self._cond:
            return self._exits.get(handle)

    def wait_exit(self, handle: int, timeout: Optional[float]) -> Optional[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while handle not in self._exits:
                if self._dead or (self.proc is not None and self.proc.poll() is not None):
                    raise MachineDead((self._dead or "qemu exited") + self.diagnostics())
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._exits[handle]

    # --- state ---------------------------------------------------------------------------
    def alive(self) -> bool:
        return (self.proc is not None and self.proc.poll() is None and not self._dead
                and not self.broken and not self._closed)

    def ping(self, wait: float = 15) -> dict:
        return self.request("ping", wait=wait)

    def console_text(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console_text().splitlines()[-lines:])

    def diagnostics(self) -> str:
        out = f"\n--- serial console (tail) [{self.console_path}] ---\n{self.console_tail()}"
        try:
            qlog = self.qemu_log_path.read_text(errors="replace").strip()
        except OSError:
            qlog = ""
        if qlog:
            out += f"\n--- qemu stderr (tail) ---\n{qlog[-2000:]}"
        return out

    # --- files -------------------------------------------------------------------------
    def xfer_tmp(self) -> tuple:
        """(host path, guest path) of a fresh name in the xfer share."""
        name = uuid.uuid4().hex
        return self.xfer / "tmp" / name, f"{XFER_GUEST}/tmp/{name}"

    def import_file(self, host_path: str) -> str:
        """The guest path of a host file's current bytes. The root share is cached
        (cache=loose), so a file created or changed after boot could be stale or
        missing there: such files are copied into the xfer share (once per version)."""
        real = os.path.realpath(host_path)
        st = os.stat(real)
        # ctime changes on every write, rename and link of the inode: an inode unchanged
        # since before the boot cannot be stale in the guest's cache.
        if st.st_ctime < (self.boot_started or 0) - 1:
            return real
        key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            cached = self._import_cache.get(key)
        if cached:
            return cached
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        d = self.xfer / "import" / digest
        d.mkdir(exist_ok=True)
        base = os.path.basename(real)
        tmp = d / f".{base}.tmp"
        shutil.copy2(real, tmp)
        os.replace(tmp, d / base)
        guest = f"{XFER_GUEST}/import/{digest}/{base}"
        with self._lock:
            self._import_cache[key] = guest
        return guest

    # --- stop --------------------------------------------------------------------------
    def shutdown(self, keep_dir: Optional[bool] = None) -> None:
        """Stops qemu (QMP quit, then SIGTERM, then SIGKILL) and removes the run dir
        (kept when the guest broke or FAASD_VM_KEEP=1)."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                self._qmp_quit()
                p.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        with self._cond:
            self._dead = self._dead or "the machine was shut down"
            self._cond.notify_all()
        if keep_dir is None:
            keep_dir = bool(self.broken) or os.environ.get("FAASD_VM_KEEP") == "1"
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            # Keep the logs for a post-mortem, not the bulky copies.
            for sub in ("import", "tmp"):
                shutil.rmtree(self.xfer / sub, ignore_errors=True)

    def _qmp_quit(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(self.qmp_sock))
            f = s.makefile("rwb")
            f.readline()  # greeting
            f.write(b'{"execute":"qmp_capabilities"}\n')
            f.flush()
            f.readline()
            f.write(b'{"execute":"quit"}\n')
            f.flush()
            f.readline()
        finally:
            s.close()


_LIVE: set = set()
KEEP_RUN_DIRS = 5   # run dirs of broken guests kept for post-mortems (newest first)


def _prune_run_dirs() -> None:
    """Removes /tmp/faasd-qemu.* dirs whose owner process is gone, except the newest
    KEEP_RUN_DIRS (console logs of guests that broke, runs that were SIGKILLed)."""
    stale = []
    for d in Path("/tmp").glob("faasd-qemu.*"):
        try:
            owner = int((d / "owner").read_text())
            os.kill(owner, 0)
            continue   # its pytest / vm-shell still runs
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            pass
        try:
            stale.append((d.stat().st_mtime, d))
        except OSError:
            pass
    for _, d in sorted(stale, reverse=True)[KEEP_RUN_DIRS:]:
        shutil.rmtree(d, ignore_errors=True)


@atexit.register
def _shutdown_all() -> None:
    for m in list(_LIVE):
        try:
            m.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()


# --- the session's guest ---------------------------------------------------------------

_session_lock = threading.Lock()
_session: Optional[Machine] = None
_boot_failures: list = []   # errors of consecutive failed boots
MAX_BOOT_FAILURES = 2       # then fail fast instead of spending a boot timeout per test


def session_machine() -> Machine:
    """The session's guest: booted on first use, rebooted when it broke or stopped
    answering a ping. After MAX_BOOT_FAILURES failed boots in a row it raises at once."""
    global _session
    with _session_lock:
        m = _session
        if m is not None and m.alive():
            try:
                m.ping(wait=15)
                return m
            except VMError:
                pass
        if m is not None:
            m.shutdown()
            _session = None
        if len(_boot_failures) >= MAX_BOOT_FAILURES:
            raise VMError(f"the guest failed to boot {len(_boot_failures)} times in a row; "
                          f"not trying again. Last error:\n{_boot_failures[-1]}")
        try:
            _session = Machine().boot()
        except VMError as e:
            _boot_failures.append(str(e))
            raise
        _boot_failures.clear()
        return _session


def shutdown_session() -> None:
    global _session
    with _session_lock:
        if _session is not None:
            _session.shutdown()
            _session = None


# --- the VM interface ------------------------------------------------------------------

class QemuSpawned(Spawned):
    """A process the agent started in the guest. pid is the guest pid; stdout and stderr
    go to files in the xfer share, i.e. on the test host (stdout_path/stderr_path)."""

    def __init__(self, machine: Machine, handle: int, pid: int, argv: list,
                 stdout_path: Path, stderr_path: Path):
        self._machine = machine
        self.handle = handle
        self.pid = pid
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.poll() is None:
            self._machine.request("signal", handle=self.handle, sig=int(sig))

    def poll(self) -> Optional[int]:
        return self._machine.exit_code(self.handle)

    @property
    def returncode(self) -> Optional[int]:
        return self.poll()

    def wait(self, timeout: float) -> int:
        """Waits for the exit; raises subprocess.TimeoutExpired after `timeout` s."""
        rc = self._machine.wait_exit(self.handle, timeout)
        if rc is None:
            raise subprocess.TimeoutExpired(self.argv, timeout)
        return rc

    def ensure_dead(self) -> None:
        if self.poll() is None and self._machine.alive():
            try:
                self._machine.request("signal", handle=self.handle, sig=int(signal.SIGKILL))
                self.wait(timeout=30)
            except (subprocess.TimeoutExpired, MachineDead):
                pass


class QemuVM(VM):
    """A test's view of the session's guest (see the module docstring)."""

    name = "qemu"
    _instances = 0

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._spawned: list = []
        self._counter = 0
        self._closed = False
        QemuVM._instances += 1
        self._token = f"t{QemuVM._instances}"
        self.machine = session_machine()
        self.boot_id = self.machine.boot_id
        # Like the sandbox: empty directories on the host, a fresh tmpfs inside.
        self._base = tempfile.mkdtemp(prefix="faasd-vm.", dir="/tmp")
        self.state_dir = os.path.join(self._base, "state")
        self.run_dir = os.path.join(self._base, "run")
        os.mkdir(self.state_dir)
        os.mkdir(self.run_dir)
        try:
            self.machine.request("mount_tmpfs", paths=[self.state_dir, self.run_dir], wait=30)
        except BaseException:
            self._rmdirs()
            raise

    # --- commands ------------------------------------------------------------------------
    def run(self, cmd: Cmd, check: bool = True, timeout: float = 60,
            input: Optional[bytes] = None, text: bool = True) -> RunResult:
        argv = _argv(cmd)
        if isinstance(input, str):
            input = input.encode()
        fields = {"cmd": argv, "timeout": timeout}
        if input is not None:
            if len(input) > INLINE_MAX:
                host, guest = self.machine.xfer_tmp()
                host.write_bytes(input)
                fields["stdin_file"] = guest
            else:
                fields["stdin"] = base64.b64encode(input).decode()
        wait = None if timeout is None else timeout + self.machine.grace
        reply = self.machine.request("run", wait=wait, **fields)
        out = base64.b64decode(reply["stdout"])
        err = base64.b64decode(reply["stderr"])
        if reply.get("timed_out"):
            raise VMError(f"command {argv!r} timed out after {timeout} s; "
                          f"stdout={out!r:.2000} stderr={err!r:.2000}")
        result = RunResult(argv, reply["rc"], out.decode(errors="replace") if text else "",
                           err.decode(errors="replace"), out)
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def spawn(self, cmd: Cmd, log_name: str = "spawned") -> Spawned:
        argv = _argv(cmd)
        self._counter += 1
        base = f"{self._token}-{log_name}.{self._counter}"
        reply = self.machine.request("spawn", cmd=argv, wait=60,
                                     stdout=f"{XFER_GUEST}/logs/{base}.stdout",
                                     stderr=f"{XFER_GUEST}/logs/{base}.stderr")
        logs = self.machine.xfer / "logs"
        handle = QemuSpawned(self.machine, reply["handle"], reply["pid"], argv,
                             logs / f"{base}.stdout", logs / f"{base}.stderr")
        handle.log_name = f"{log_name}.{self._counter}"
        self._spawned.append(handle)
        return handle

    def kill_spawned(self, keep=()) -> None:
        for handle in self._spawned:
            if handle.pid not in keep:
                handle.ensure_dead()

    # --- files ---------------------------------------------------------------------------
    @staticmethod
    def _check_path(path: str) -> None:
        if not str(path).startswith("/"):
            raise VMError(f"VM paths must be absolute: {path!r}")

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._check_path(path)
        if len(data) > INLINE_MAX:
            host, guest = self.machine.xfer_tmp()
            host.write_bytes(data)
            try:
                self.machine.request("write_file", path=path, src=guest, mode=mode, wait=120)
            finally:
                host.unlink(missing_ok=True)
        else:
            self.machine.request("write_file", path=path, mode=mode, wait=60,
                                 data=base64.b64encode(data).decode())

    def read_file(self, path: str) -> bytes:
        self._check_path(path)
        host, guest = self.machine.xfer_tmp()
        reply = self.machine.request("read_file", path=path, inline_max=INLINE_MAX, dst=guest,
                                     wait=120)
        if "data" in reply:
            return base64.b64decode(reply["data"])
        try:
            return host.read_bytes()
        finally:
            host.unlink(missing_ok=True)

    def import_file(self, host_path: str) -> str:
        return self.machine.import_file(str(host_path))

    # --- qemu-only extras ------------------------------------------------------------------
    def console_tail(self, lines: int = 40) -> str:
        """The tail of the guest's serial console (kernel messages, init, agent errors)."""
        return self.machine.console_tail(lines)

    def reboot(self) -> None:
        """Boots a fresh guest (for tests that crash or wedge the kernel on purpose).
        The state and run dirs are fresh tmpfs again; spawned processes are gone."""
        global _session
        with _session_lock:
            if _session is self.machine:
                _session = None
        self.machine.shutdown()
        self.machine = session_machine()
        self.boot_id = self.machine.boot_id
        self._spawned = []
        self.machine.request("mount_tmpfs", paths=[self.state_dir, self.run_dir], wait=30)

    # --- per-test cleanup ----------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        m = self.machine
        problems = []
        try:
            if m.alive():
                for handle in self._spawned:
                    handle.ensure_dead()
                reply = m.request("reset", umount=[self._base], wait=60)
                leftovers = [p for p in reply.get("killed", [])
                             if _is_faasd_related(p, self.state_dir, self.run_dir)]
                if leftovers:
                    problems.append("faasd/runc processes were still running after the test "
                                    "(now killed): " + "; ".join(
                                        f"{p['pid']} {p['cmdline'][:200]}" for p in leftovers))
                if reply.get("errors"):
                    problems.append("guest cleanup: " + "; ".join(reply["errors"]))
                    m.broken = "the guest could not be cleaned up"
        except VMError as e:
            problems.append(f"guest cleanup failed: {e}")
        finally:
            self._save_logs()
            if m.broken or not m.alive():
                # Next test gets a new guest; the broken one stops burning CPU now.
                m.shutdown()
            self._rmdirs()
        if problems:
            raise VMError("\n".join(problems))

    def _save_logs(self) -> None:
        """Copies the logs of spawned processes and the console into work_dir."""
        for handle in self._spawned:
            for src in (handle.stdout_path, handle.stderr_path):
                try:
                    dst = self.work_dir / src.name.split("-", 1)[1]
                    shutil.copyfile(src, dst)
                except (OSError, IndexError):
                    pass
        try:
            (self.work_dir / "console.log").write_text(self.machine.console_text())
        except OSError:
            pass

    def _rmdirs(self) -> None:
        for d in (self.state_dir, self.run_dir, self._base):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _is_faasd_related(proc: dict, state_dir: str, run_dir: str) -> bool:
    cmd = proc.get("cmdline", "")
    words = cmd.split()
    prog = os.path.basename(words[0]) if words else proc.get("comm", "")
    return (prog in ("faasd", "runc", "crun") or "faasd" in proc.get("comm", "")
            or state_dir in cmd or run_dir in cmd or "/faasd/" in proc.get("cgroup", ""))


# --- interactive use: scripts/vm-shell.sh --------------------------------------------------

def _shell_main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(
        prog="vm-shell.sh",
        description="Boot the vmtest guest (the same VM as --vm=qemu) and get a shell in it.")
    ap.add_argument("-c", dest="command", help="run one command (sh -c), print its output, "
                                               "exit with its status")
    ap.add_argument("--console", action="store_true",
                    help="serial console instead: bash on ttyS0 through this terminal "
                         "(Ctrl-A x quits qemu, Ctrl-A c toggles the qemu monitor)")
    ap.add_argument("--mem", type=int, help="guest RAM in MiB")
    ap.add_argument("--keep", action="store_true", help="keep the run dir (console.log)")
    args = ap.parse_args(argv)
    if args.keep:
        os.environ["FAASD_VM_KEEP"] = "1"
    problems = check_host()
    if problems:
        print("vm-shell: " + "; ".join(problems))
        return 2
    m = Machine(memory_mb=args.mem, serial_stdio=args.console, shell_on_serial=args.console)
    t0 = time.monotonic()
    try:
        if args.console:
            print(f"vm-shell: booting ({m.accel}: {m.accel_reason}); Ctrl-A x quits", flush=True)
            m.boot()
            m.proc.wait()
            return 0
        print(f"vm-shell: booting ({m.accel}: {m.accel_reason}) ...", flush=True)
        m.boot()
        print(f"vm-shell: guest ready in {time.monotonic() - t0:.1f} s; run dir {m.dir}",
              flush=True)
        if args.command is not None:
            return _shell_run(m, args.command, "/")
        return _shell_loop(m)
    finally:
        m.shutdown(keep_dir=args.keep or None)


def _shell_run(m: Machine, cmd: str, cwd: str) -> int:
    """Runs `cmd` as a spawned process and streams its output; Ctrl-C sends SIGINT to
    it (twice: SIGKILL)."""
    import sys
    name = uuid.uuid4().hex
    out_h, err_h = m.xfer / "logs" / f"{name}.out", m.xfer / "logs" / f"{name}.err"
    reply = m.request("spawn", cmd=["/bin/sh", "-c", cmd], cwd=cwd,
                      stdout=f"{XFER_GUEST}/logs/{name}.out",
                      stderr=f"{XFER_GUEST}/logs/{name}.err")
    handle, offsets, interrupts = reply["handle"], [0, 0], 0

    def pump() -> None:
        for i, (path, stream) in enumerate(((out_h, sys.stdout), (err_h, sys.stderr))):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[i])
                    data = f.read()
            except OSError:
                continue
            offsets[i] += len(data)
            stream.buffer.write(data)
            stream.flush()

    rc = None
    while rc is None:
        try:
            rc = m.wait_exit(handle, 0.1)
            pump()
        except KeyboardInterrupt:
            interrupts += 1
            sig = signal.SIGINT if interrupts == 1 else signal.SIGKILL
            m.request("signal", handle=handle, sig=int(sig), group=True)
    pump()
    for p in (out_h, err_h):
        p.unlink(missing_ok=True)
    return rc if rc >= 0 else 128 - rc


def _shell_loop(m: Machine) -> int:
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    print("vm-shell: each line runs with sh -c in the guest (cd is remembered); "
          "exit or Ctrl-D quits")
    cwd, rc = "/", 0
    while True:
        try:
            line = input(f"vm:{cwd}{'' if rc == 0 else f' [{rc}]'}# ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("exit", "quit", "logout"):
            return 0
        if line == "cd" or line.startswith("cd "):
            target = line[2:].strip() or "/root"
            r = m.request("run", cmd=["/bin/sh", "-c", f"cd {target} && pwd"], cwd=cwd,
                          timeout=30)
            if r["rc"] == 0:
                cwd = base64.b64decode(r["stdout"]).decode().strip()
            else:
                print(base64.b64decode(r["stderr"]).decode(errors="replace"), end="")
            continue
        try:
            rc = _shell_run(m, line, cwd)
        except VMError as e:
            print(f"vm-shell: {e}")
            return 1


if __name__ == "__main__":
    raise SystemExit(_shell_main())
