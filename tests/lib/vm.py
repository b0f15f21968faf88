"""The machine under test: the ONE way tests touch the system that runs faasd.

Tests never call subprocess, open() or socket() on the system under test
themselves; they go through a `VM`:

    vm.run(cmd, check=True, timeout=60, input=None) -> RunResult(returncode, stdout, stderr)
    vm.spawn(cmd) -> Spawned(pid, kill(sig), wait(timeout), poll(), stderr_text(), stdout_text())
    vm.write_file(path, data: bytes)
    vm.read_file(path) -> bytes
    vm.import_file(host_path) -> path of the same bytes inside the VM

`cmd` is a str (run with `sh -c`) or an argv list. Paths are paths inside the VM.

Backends:

  sandbox (default)  One long-lived "holder" process created with
                     `unshare --net --mount --propagation private`. In its namespaces
                     `lo` is up and a fresh tmpfs is mounted on the state dir and on the
                     run dir, so nothing faasd writes there and no address it adds is
                     visible on the host. Commands enter with
                     `nsenter --target HOLDER --net --mount`. The namespaces share the
                     host's filesystem (outside the two tmpfs mounts), processes and
                     cgroups: the repo, the build dir and the image cache are at the
                     same paths inside.
  qemu               Not implemented yet: the same interface backed by a VM (ssh or a
                     virtio-serial agent for run/spawn, a shared directory for files).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

Cmd = Union[str, Sequence[str]]


class VMError(RuntimeError):
    pass


@dataclass
class RunResult:
    args: list
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""

    def __str__(self) -> str:
        return (f"command {self.args!r} exited {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")


class CommandFailed(VMError):
    def __init__(self, result: RunResult):
        super().__init__(str(result))
        self.result = result


def _argv(cmd: Cmd) -> list:
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    return [str(c) for c in cmd]


class Spawned:
    """A long-running process inside the VM (e.g. faasd). Its stdout and stderr go to
    files on the test host, readable at any time with stdout_text()/stderr_text()."""

    def __init__(self, popen: subprocess.Popen, pid: int, argv: list, stdout_path: Path,
                 stderr_path: Path):
        self._popen = popen
        self.pid = pid
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self._popen.poll() is None:
            os.kill(self.pid, sig)

    def poll(self) -> Optional[int]:
        return self._popen.poll()

    @property
    def returncode(self) -> Optional[int]:
        return self._popen.returncode

    def wait(self, timeout: float) -> int:
        """Waits for the exit; raises subprocess.TimeoutExpired after `timeout` s."""
        return self._popen.wait(timeout=timeout)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def ensure_dead(self) -> None:
        """Last-resort cleanup for a test that failed midway: SIGKILL and reap."""
        if self._popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._popen.wait(timeout=30)


class VM:
    """The interface every backend implements (see the module docstring)."""

    name = "abstract"
    state_dir: str  # tmpfs inside the VM: faasd's --state-dir
    run_dir: str    # tmpfs inside the VM: faasd's --run-dir

    def run(self, cmd: Cmd, check: bool = True, timeout: float = 60,
            input: Optional[bytes] = None, text: bool = True) -> RunResult:
        raise NotImplementedError

    def spawn(self, cmd: Cmd, log_name: str = "spawned") -> Spawned:
        raise NotImplementedError

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        raise NotImplementedError

    def read_file(self, path: str) -> bytes:
        raise NotImplementedError

    def import_file(self, host_path: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def kill_spawned(self, keep=()) -> None:
        """SIGKILLs every process spawn() started that still runs, except pids in `keep`."""
        raise NotImplementedError

    # Conveniences built on run(); backends need not override them.
    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def listdir(self, path: str) -> list:
        r = self.run(["ls", "-1A", path], check=False)
        return r.stdout.split() if r.returncode == 0 else []


class SandboxVM(VM):
    """Network + mount namespaces held open by one `unshare` process (see module doc)."""

    name = "sandbox"

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._spawned: list = []
        self._counter = 0
        # Mount points: empty directories on the host; the tmpfs exists only inside.
        self._base = tempfile.mkdtemp(prefix="faasd-vm.", dir="/tmp")
        self.state_dir = os.path.join(self._base, "state")
        self.run_dir = os.path.join(self._base, "run")
        os.mkdir(self.state_dir)
        os.mkdir(self.run_dir)
        setup = (
            "set -e\n"
            "ip link set lo up\n"
            f"mount -t tmpfs -o mode=0755 faasd-test-state {shlex.quote(self.state_dir)}\n"
            f"mount -t tmpfs -o mode=0755 faasd-test-run {shlex.quote(self.run_dir)}\n"
            "echo ready\n"
            # Lives until its stdin closes: the holder also goes away if pytest dies.
            "exec cat >/dev/null\n")
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "/bin/sh", "-c", setup],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        line = self._holder.stdout.readline()
        if line.strip() != b"ready":
            err = self._holder.stderr.read().decode(errors="replace") if self._holder.poll() is not None else ""
            self.close()
            raise VMError(f"sandbox holder did not start: {line!r} {err}")
        self.holder_pid = self._holder.pid
        self._root = f"/proc/{self.holder_pid}/root"
        own = os.readlink("/proc/self/ns/net")
        inner = os.readlink(f"/proc/{self.holder_pid}/ns/net")
        if own == inner:
            self.close()
            raise VMError("sandbox holder shares the host network namespace")
        self.netns = inner

    def _enter(self, argv: list) -> list:
        return ["nsenter", "--target", str(self.holder_pid), "--net", "--mount", "--"] + argv

    def run(self, cmd: Cmd, check: bool = True, timeout: float = 60,
            input: Optional[bytes] = None, text: bool = True) -> RunResult:
        argv = _argv(cmd)
        if isinstance(input, str):
            input = input.encode()
        try:
            p = subprocess.run(self._enter(argv), input=input, capture_output=True,
                               timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise VMError(f"command {argv!r} timed out after {timeout} s; "
                          f"stdout={e.stdout!r:.2000} stderr={e.stderr!r:.2000}") from None
        result = RunResult(argv, p.returncode, p.stdout.decode(errors="replace") if text else "",
                           p.stderr.decode(errors="replace"), p.stdout)
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def spawn(self, cmd: Cmd, log_name: str = "spawned") -> Spawned:
        argv = _argv(cmd)
        self._counter += 1
        out = self.work_dir / f"{log_name}.{self._counter}.stdout"
        err = self.work_dir / f"{log_name}.{self._counter}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(self._enter(argv), stdin=subprocess.DEVNULL, stdout=fo,
                                     stderr=fe, start_new_session=True)
        # nsenter without --fork execs the command: the pid is the command's pid.
        handle = Spawned(popen, popen.pid, argv, out, err)
        self._spawned.append(handle)
        return handle

    def _host_path(self, path: str) -> str:
        if not path.startswith("/"):
            raise VMError(f"VM paths must be absolute: {path!r}")
        return self._root + path

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        host = self._host_path(path)
        tmp = f"{host}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.rename(tmp, host)

    def read_file(self, path: str) -> bytes:
        with open(self._host_path(path), "rb") as f:
            return f.read()

    def import_file(self, host_path: str) -> str:
        # Outside the two tmpfs mounts the sandbox sees the host's filesystem.
        return str(host_path)

    def kill_spawned(self, keep=()) -> None:
        for handle in self._spawned:
            if handle.pid not in keep:
                handle.ensure_dead()

    def close(self) -> None:
        for handle in self._spawned:
            handle.ensure_dead()
        holder = getattr(self, "_holder", None)
        if holder is not None and holder.poll() is None:
            holder.stdin.close()
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=10)
        for d in (getattr(self, "state_dir", None), getattr(self, "run_dir", None),
                  getattr(self, "_base", None)):
            if d:
                try:
                    os.rmdir(d)  # empty on the host: the tmpfs lived in the namespace
                except OSError:
                    pass


def make_vm(kind: str, work_dir: Path) -> VM:
    if kind == "sandbox":
        return SandboxVM(work_dir)
    if kind == "qemu":
        from .qemu_vm import QemuVM  # the session's guest, booted on first use
        return QemuVM(work_dir)
    raise VMError(f"unknown vm backend {kind!r}")


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns that value. Raises
    AssertionError naming `what` after `timeout` seconds. The interval grows to 0.2 s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)
