"""faasd as a systemd service: the notify protocol (sd_notify(3)) checked against a
datagram socket given as NOTIFY_SOCKET, the way systemd gives it, and the unit file
checked by `systemd-analyze verify`.

READY=1 comes once the control API answers, STATUS= lines follow what faasd serves,
WATCHDOG=1 comes from the event loop every half WATCHDOG_USEC and stops while faasd
is stopped (SIGSTOP stops the whole process, loop and all: this shows the pings are
the process's and stop with it; that they come from the loop and not from a thread of
their own is shown by tests/unit/notify_test.cc), and SIGTERM sends STOPPING=1 before
faasd drains and exits 0."""

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lib.vm import wait_for

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "faasd.service"
WATCHDOG_USEC = 1_000_000  # systemd's bound between two pings; faasd pings every half
INTERVAL = WATCHDOG_USEC / 1e6


class ServiceManager:
    """The notification end of a service manager: a SOCK_DGRAM unix socket read by a
    thread that keeps every message with its arrival time (monotonic)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []  # (time, {key: value}, raw)
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self.lock:
                self.messages.append((time.monotonic(), fields, data.decode()))

    def close(self):
        self.closed = True
        self.thread.join(timeout=5)
        self.sock.close()

    def snapshot(self) -> list:
        with self.lock:
            return list(self.messages)

    def wait(self, key: str, value=None, after: float = 0.0, timeout: float = 20):
        """The first message since `after` with `key` (equal to `value` when given)."""
        def find():
            for t, fields, _ in self.snapshot():
                if t >= after and key in fields and (value is None or fields[key] == value):
                    return t, fields
            return None
        return wait_for(find, timeout, what=f"{key}={value or '...'} on NOTIFY_SOCKET")

    def pings(self, start: float, end: float) -> list:
        return [t for t, fields, _ in self.snapshot()
                if start <= t <= end and fields.get("WATCHDOG") == "1"]


@pytest.fixture
def manager(tmp_path):
    m = ServiceManager(tmp_path / "notify")
    yield m
    m.close()


def spawn_notified(faasd, manager, *extra):
    """Starts faasd as systemd would, without waiting for /healthz (the test waits for
    READY=1 instead). `env` execs faasd, so the pid stays faasd's."""
    faasd.launcher = ["env", f"NOTIFY_SOCKET={manager.path}", f"WATCHDOG_USEC={WATCHDOG_USEC}"]
    faasd.args = list(extra)
    faasd.proc = faasd.vm.spawn(faasd.launcher + faasd.command(*extra), log_name="faasd")


@pytest.mark.integration
def test_ready_status_watchdog_and_stopping(faas_unstarted, manager):
    faasd = faas_unstarted.faasd
    spawn_notified(faasd, manager)
    t_ready, ready = manager.wait("READY", "1")
    # READY=1 means the API serves: the first /healthz after it is answered.
    assert faasd.healthy(), f"READY=1 came before the API answered:\n{faasd.log()[-3000:]}"
    assert ready["STATUS"] == "0 function(s), 0 request(s) served"
    before = [raw for t, _, raw in manager.snapshot() if t < t_ready]
    assert before == [], f"messages before READY=1: {before}"

    # A deploy changes the status at once; a served request within the status period.
    fn = faas_unstarted.deploy_handler("hello")
    manager.wait("STATUS", "1 function(s), 0 request(s) served", after=t_ready)
    faas_unstarted.assert_handler_responds(fn.ip)
    manager.wait("STATUS", "1 function(s), 1 request(s) served", after=t_ready, timeout=15)

    # Pings every half interval, never a gap of a whole one.
    pings = wait_for(lambda: [t_ready] + manager.pings(t_ready, time.monotonic())
                     if len(manager.pings(t_ready, time.monotonic())) >= 6 else None,
                     10 * INTERVAL, what="6 watchdog pings")
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < INTERVAL, f"a gap of {max(gaps):.3f} s between pings (bound {INTERVAL} s)"

    # SIGTERM: STOPPING=1 first, then the drain, then exit 0.
    t_term = time.monotonic()
    assert faasd.stop() == 0, faasd.log()[-3000:]
    _, stopping = manager.wait("STOPPING", "1", after=t_term, timeout=5)
    assert stopping["STATUS"].startswith("draining: 1 function(s)")


def stopped(faasd) -> bool:
    stat = faasd.vm.read_file(f"/proc/{faasd.pid}/stat").decode()
    return stat.rpartition(")")[2].split()[0] == "T"


@pytest.mark.integration
def test_stopped_process_sends_no_pings_and_resumes(faasd_unstarted, manager):
    faasd = faasd_unstarted
    spawn_notified(faasd, manager)
    t_ready, _ = manager.wait("READY", "1")
    manager.wait("WATCHDOG", "1", after=t_ready, timeout=2 * INTERVAL)

    faasd.proc.kill(signal.SIGSTOP)
    try:
        wait_for(lambda: stopped(faasd), 5, what="faasd to be stopped")
        t_stop = time.monotonic()
        # Absence over a span can only be seen by waiting out the span.
        time.sleep(2 * INTERVAL)
        t_cont = time.monotonic()
        assert manager.pings(t_stop, t_cont) == [], "a stopped faasd pinged the watchdog"
    finally:
        faasd.proc.kill(signal.SIGCONT)
    manager.wait("WATCHDOG", "1", after=t_cont, timeout=INTERVAL)
    assert faasd.healthy()


@pytest.mark.unit
def test_unit_file_passes_systemd_analyze_verify(tmp_path, build_dir):
    text = UNIT.read_text()
    service = dict(re.findall(r"^(\w+)=(.*)$", text.split("[Service]")[1].split("[Install]")[0],
                              re.M))
    assert service["ExecStart"] == "/usr/bin/faasd"
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["KillMode"] == "mixed" and service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30s"
    # Above faasd's default --drain-timeout of 10 s, with room for the clean-up.
    assert int(service["TimeoutStopSec"].rstrip("s")) >= 20
    assert service["StateDirectory"] == "faasd" and service["RuntimeDirectory"] == "faasd"
    assert service["Delegate"] == "yes"

    # verify wants ExecStart's program to exist: a copy of the unit runs the built one.
    copy = tmp_path / "faasd.service"
    copy.write_text(text.replace("ExecStart=/usr/bin/faasd", f"ExecStart={build_dir / 'faasd'}"))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    # verify exits 0 on a value it cannot parse ("..., ignoring"): its output must not
    # mention the unit at all.
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "faasd.service" in line]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr
