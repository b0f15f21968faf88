"""etcd members (Debian's etcd-server) started by a test inside its network
namespace, on loopback ports of their own, with etcdctl to look at what faasd wrote."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .registry import wait_http
from .vm import VM


class Etcd:
    """A cluster of etcd members, data under `work`: `members` of them on 127.0.0.1
    in `vm`, or one in each VM of `placed` ([(vm, address)], a LAN) on port 2379."""

    def __init__(self, vm: VM, work: Path, members: int = 1, base_port: int = 2379,
                 placed: list = None):
        self.vm = vm
        self.work = work
        if placed is None:
            placed = [(vm, "127.0.0.1")] * members
        self.names = [f"e{i}" for i in range(len(placed))]
        self.vms = {n: placed[i][0] for i, n in enumerate(self.names)}
        ports = [(base_port + 2 * i, base_port + 2 * i + 1) if host == "127.0.0.1"
                 else (2379, 2380) for i, (_, host) in enumerate(placed)]
        self.client = {n: f"http://{placed[i][1]}:{ports[i][0]}" for i, n in enumerate(self.names)}
        self.peer = {n: f"http://{placed[i][1]}:{ports[i][1]}" for i, n in enumerate(self.names)}
        self.procs = {}
        for name in self.names:
            self.start(name)
        for name in self.names:
            wait_http(self.vms[name], f"{self.client[name]}/health", self.procs[name],
                      f"etcd {name}")

    def start(self, name: str) -> None:
        cluster = ",".join(f"{n}={self.peer[n]}" for n in self.names)
        data = self.work / f"etcd-{name}"
        data.mkdir(parents=True, exist_ok=True)
        self.procs[name] = self.vms[name].spawn([
            "etcd", f"--name={name}", f"--data-dir={data}",
            f"--listen-client-urls={self.client[name]}",
            f"--advertise-client-urls={self.client[name]}",
            f"--listen-peer-urls={self.peer[name]}",
            f"--initial-advertise-peer-urls={self.peer[name]}",
            f"--initial-cluster={cluster}", "--initial-cluster-state=new",
            "--logger=zap", "--log-level=warn"], log_name=f"etcd-{name}")

    def stop(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(20)

    def restart(self, name: str) -> None:
        self.start(name)
        wait_http(self.vms[name], f"{self.client[name]}/health", self.procs[name],
                  f"etcd {name}")

    @property
    def endpoints(self) -> str:
        return ",".join(self.client[n] for n in self.names)

    def ctl(self, *args: str, check: bool = True):
        return self.vm.run(["etcdctl", "--command-timeout=5s", f"--endpoints={self.endpoints}",
                            *args], check=check)

    def leader(self) -> str:
        """The name of the member that leads now."""
        status = json.loads(self.ctl("endpoint", "status", "-w", "json", check=False).stdout
                            or "[]")
        for entry in status:
            if entry["Status"]["leader"] == entry["Status"]["header"]["member_id"]:
                return next(n for n in self.names if self.client[n] == entry["Endpoint"])
        raise AssertionError(f"no leader in {status}")

    def get(self, key: str):
        """The value of `key` (parsed JSON when it is), or None."""
        out = json.loads(self.ctl("get", key, "-w", "json").stdout)
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        value = base64.b64decode(kvs[0]["value"]).decode()
        try:
            return json.loads(value)
        except ValueError:
            return value
