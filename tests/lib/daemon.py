"""One faasd inside a VM: start, readiness, stop, the control API, and the
"left nothing behind" checks the faasd fixture runs at teardown.

faasd keeps no pool of started containers unless asked (its default `--warm 0`), so
"idle" means no bundle, runc container or handler process. Pool tests pass
`--warm N` (to faasd or to `faas new`) and account for the pooled containers.

Every faasd runs its containers with the OCI runtime named by the session's
`--runtime` option (runc by default, or crun): `--runtime NAME` is added to each
start unless the arguments name a runtime of their own, and the container checks
(`runc_containers()`, `leftovers()`) ask that runtime, in its state dir under
RUN_DIR (`runc_root`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Optional

from .vm import VM, CommandFailed, RunResult, Spawned, wait_for

LIB_DIR = Path(__file__).resolve().parent
CONTAINER_ID_RE = re.compile(r"\b(faas-[0-9a-f]{6})-\d+\b")
LABEL = "lo:faas"


class Faasd:
    def __init__(self, vm: VM, bin_dir: Path, runtime: str = "runc"):
        self.vm = vm
        # The OCI runtime (a name in the VM's PATH) faasd is started with, and the one
        # asked for the containers that exist.
        self.runtime = runtime
        self.faasd_bin = str(vm.import_file(str(Path(bin_dir) / "faasd")))
        self.faas_bin = str(vm.import_file(str(Path(bin_dir) / "faas")))
        self.vmtools = vm.import_file(str(LIB_DIR / "vmtools.py"))
        self.state_dir = vm.state_dir
        self.run_dir = vm.run_dir
        self.socket = f"{self.run_dir}/faasd.sock"
        self.proc: Optional[Spawned] = None
        # argv put before faasd's by start(), e.g. ["prlimit", "--nofile=128:", "--"]:
        # a program that execs faasd (its pid stays faasd's).
        self.launcher: list = []
        self.args: list = []
        self.past_logs: list = []
        self.exit_codes: list = []

    @property
    def runc_root(self) -> str:
        """The runtime's state dir (its --root): RUN_DIR/runc, whichever runtime."""
        return f"{self.run_dir}/runc"

    # --- lifecycle ----------------------------------------------------------------
    def command(self, *extra: str) -> list:
        """faasd's argv: the VM's dirs, debug logging, `--runtime RUNTIME` unless
        `extra` sets --runtime (see the module docstring), then `extra`."""
        extra = [str(a) for a in extra]
        runtime = [] if _has_option(extra, "--runtime") else ["--runtime", self.runtime]
        return [self.faasd_bin, "--state-dir", self.state_dir, "--run-dir", self.run_dir,
                "--log-level", "debug", *runtime, *extra]

    def start(self, *extra: str, ready_timeout: float = 20) -> "Faasd":
        assert self.proc is None or self.proc.poll() is not None, "faasd is already running"
        if self.proc is not None:
            self._retire()
        self.args = list(extra)
        self.proc = self.vm.spawn(self.launcher + self.command(*extra), log_name="faasd")

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"faasd exited with {self.proc.returncode} before it was "
                                     f"ready:\n{self.proc.stderr_text()[-5000:]}")
            return self.healthy()

        wait_for(ready, ready_timeout, what="faasd to answer /healthz")
        return self

    def healthy(self) -> bool:
        r = self.vm.run(["curl", "-sf", "--max-time", "2", "--unix-socket", self.socket,
                         "http://faasd/healthz"], check=False)
        if r.returncode != 0:
            return False
        try:
            return json.loads(r.stdout) == {"status": "ok"}
        except ValueError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Sends `sig` and waits for the exit; returns the exit code (negative: signal)."""
        assert self.proc is not None, "faasd was never started"
        self.proc.kill(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log = self.proc.stderr_text()[-5000:]
            self.proc.ensure_dead()
            raise AssertionError(f"faasd did not exit within {timeout} s of signal {sig}:\n{log}")
        return rc

    def kill9(self) -> None:
        rc = self.stop(signal.SIGKILL, timeout=10)
        assert rc == -signal.SIGKILL, rc

    def restart(self, *extra: str) -> "Faasd":
        rc = self.stop()
        assert rc == 0, f"faasd exited {rc} on SIGTERM:\n{self.log()[-5000:]}"
        return self.start(*(extra or self.args))

    def _retire(self) -> None:
        self.past_logs.append(self.proc.stderr_text())
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def log(self) -> str:
        """stderr of every faasd this fixture started, oldest first."""
        current = self.proc.stderr_text() if self.proc is not None else ""
        return "".join(self.past_logs) + current

    def container_prefixes(self) -> set:
        return set(CONTAINER_ID_RE.findall(self.log()))

    # --- clients --------------------------------------------------------------------
    def faas(self, *args: str, stdin_path: Optional[str] = None, check: bool = False,
             timeout: float = 120) -> RunResult:
        """Runs the `faas` CLI inside the VM against this faasd."""
        argv = [self.faas_bin, "--socket", self.socket, *args]
        if stdin_path is not None:
            cmd = " ".join(_sh_quote(a) for a in argv) + " < " + _sh_quote(stdin_path)
            return self.vm.run(cmd, check=check, timeout=timeout)
        return self.vm.run(argv, check=check, timeout=timeout)

    def api(self, method: str, path: str, headers: Optional[dict] = None,
            body_path: Optional[str] = None, timeout: float = 120):
        """One control-API request with curl over the unix socket.
        Returns (status, parsed JSON body or the raw text); status 0 when faasd closed
        the connection without an HTTP answer (the body is then curl's error)."""
        argv = ["curl", "-sS", "--max-time", str(int(timeout)), "--unix-socket", self.socket,
                "-X", method, "-o", "-", "-w", "\n%{http_code}"]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        if body_path is not None:
            argv += ["--data-binary", "@" + body_path]
        argv.append("http://faasd" + path)
        r = self.vm.run(argv, check=False, timeout=timeout + 10)
        text, _, code = r.stdout.rpartition("\n")
        if r.returncode != 0 and code in ("", "000"):
            return 0, f"no HTTP answer: {r.stderr.strip()}"
        assert r.returncode == 0, f"curl failed: {r}"
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return int(code), body

    # --- inspection -----------------------------------------------------------------
    def addresses(self) -> list:
        """IPv4 addresses on lo inside the VM: [{"local", "prefixlen", "label"}]."""
        r = self.vm.run(["ip", "-j", "-4", "addr", "show", "dev", "lo"])
        out = []
        for link in json.loads(r.stdout):
            for a in link.get("addr_info", []):
                out.append({"local": a["local"], "prefixlen": a["prefixlen"],
                            "label": a.get("label", "")})
        return out

    def faas_addresses(self) -> list:
        return sorted(a["local"] for a in self.addresses() if a["label"] == LABEL)

    def bundles(self) -> list:
        return self.vm.listdir(f"{self.state_dir}/bundles")

    def runc_containers(self) -> list:
        """The ids of the containers faasd's runtime (runc or crun) knows of."""
        if not self.vm.exists(self.runc_root):
            return []
        # `runc list` fails when a container it is listing is deleted under it (pooled
        # containers come and go while faasd is idle): list again.
        for _ in range(5):
            r = self.vm.run([self.runtime, "--root", self.runc_root, "list", "-q"], check=False)
            if r.returncode == 0 or "no such file or directory" not in r.stderr:
                break
        if r.returncode != 0:
            raise CommandFailed(r)
        return r.stdout.split()

    def processes(self) -> list:
        r = self.vm.run(["/usr/bin/python3", self.vmtools, "procs"])
        return json.loads(r.stdout)

    def related_processes(self, include_daemon: bool = False) -> list:
        """Processes that belong to this faasd: the daemon (optionally), its descendants,
        anything whose command line names our state or run dir (runc run/delete/kill),
        and anything in a cgroup of one of our containers (orphaned handlers)."""
        procs = self.processes()
        holder = getattr(self.vm, "holder_pid", None)
        daemon = self.pid if self.running() else None
        children = {}
        for p in procs:
            children.setdefault(p["ppid"], []).append(p["pid"])
        descendants = set()
        stack = [daemon] if daemon else []
        while stack:
            for c in children.get(stack.pop(), []):
                if c not in descendants:
                    descendants.add(c)
                    stack.append(c)
        prefixes = self.container_prefixes()
        related = []
        for p in procs:
            if p["pid"] == holder:
                continue
            # A zombie is only ours to reap if its parent is the daemon or one of its children.
            if p["state"] == "Z" and p["ppid"] not in descendants | {daemon}:
                continue
            if p["pid"] == daemon:
                if include_daemon:
                    related.append(p)
                continue
            cmd = " ".join(p["cmdline"])
            if (p["pid"] in descendants or self.state_dir in cmd or self.run_dir in cmd
                    or any(f"/faasd/{px}-" in p["cgroup"] for px in prefixes)):
                related.append(p)
        return related

    def container_cgroups(self) -> list:
        """cgroup directories of this faasd's containers that still exist (runc creates
        them under the cgroup parent /faasd; `runc delete` removes them)."""
        prefixes = self.container_prefixes()
        if not prefixes:
            return []
        found = []
        for parent in ("/sys/fs/cgroup/pids/faasd", "/sys/fs/cgroup/memory/faasd",
                       "/sys/fs/cgroup/faasd"):
            found += [f"{parent}/{e}" for e in self.vm.listdir(parent)
                      if any(e.startswith(p + "-") for p in prefixes)]
        return found

    def fd_count(self) -> int:
        r = self.vm.run(["/usr/bin/python3", self.vmtools, "fds", str(self.pid)])
        return json.loads(r.stdout)["count"]

    def fds(self) -> dict:
        r = self.vm.run(["/usr/bin/python3", self.vmtools, "fds", str(self.pid)])
        return json.loads(r.stdout)["targets"]

    def leftovers(self) -> dict:
        """Everything a stopped (or idle) faasd must not leave behind; empty when clean."""
        found = {}
        addrs = self.faas_addresses()
        if addrs:
            found["lo:faas addresses"] = addrs
        b = self.bundles()
        if b:
            found["bundles"] = b
        c = self.runc_containers()
        if c:
            found["runc containers"] = c
        cgroups = self.container_cgroups()
        if cgroups:
            found["container cgroups"] = cgroups
        procs = self.related_processes()
        if procs:
            found["processes"] = [(p["pid"], p["comm"], " ".join(p["cmdline"])[:200]) for p in procs]
        return found

    def idle_leftovers(self) -> dict:
        """Like leftovers() for a running faasd: its addresses are expected, the rest not."""
        found = self.leftovers()
        found.pop("lo:faas addresses", None)
        return found

    def wait_idle(self, timeout: float = 20) -> None:
        """Waits until no request is in flight: no bundle, container or helper process.
        Pooled containers count too: with a pool, wait for it with
        FaaSTestHelper.wait_pool_ready() instead."""
        try:
            wait_for(lambda: not self.idle_leftovers(), timeout, what="faasd to be idle")
        except AssertionError:
            raise AssertionError(f"faasd still has request leftovers after {timeout} s: "
                                 f"{self.idle_leftovers()}\n--- log ---\n{self.log()[-4000:]}") from None


def _has_option(args: list, name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def _sh_quote(s: str) -> str:
    return shlex.quote(str(s))

