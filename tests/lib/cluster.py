"""A faasd cluster on one machine, every part a real process in namespaces the test
made: a LAN (tests/lib/lan.py) with three node machines n1..n3, each running faasd,
its own bird2 (tests/lib/bgp.py) and one member of a 3-member etcd; a router machine
running bird2 with ECMP and Debian's docker-registry (the cluster's registry); a
client machine whose route to the functions' pool goes through the router.

    LAN 10.99.0.0/24:  n1 .1   n2 .2   n3 .3   router .4   client .5
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

from .bgp import NodeBird, Router
from .daemon import Faasd
from .etcd import Etcd
from .lan import Lan
from .registry import Registry
from .vm import VM, make_vm, wait_for

NODES = ("n1", "n2", "n3")
TTL = 3  # the nodes' lease, seconds
PORT = 80

# Makes `count` HTTP requests to ip:80, each on a new connection, for at most
# `seconds`; prints a JSON list of "ok" / "error: ..." (one per request).
CLIENT = r"""
import json, socket, sys, time
ip, count, seconds, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + seconds
out = []
while len(out) < count and time.monotonic() < deadline:
    try:
        with socket.create_connection((ip, 80), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: fn\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head = data.split(b"\r\n", 1)[0].decode(errors="replace")
        out.append("ok" if head.startswith("HTTP/1.1 200") else "error: " + head)
    except OSError as e:
        out.append(f"error: {e}")
    if pause:
        time.sleep(pause)
print(json.dumps(out))
"""


class Node:
    def __init__(self, name: str, vm: VM, faasd: Faasd, address: str, bird: NodeBird):
        self.name, self.vm, self.faasd, self.address, self.bird = name, vm, faasd, address, bird
        self.flags: list = []

    def faas(self, *args: str, check: bool = False, timeout: float = 120):
        return self.faasd.faas(*args, check=check, timeout=timeout)

    def start(self) -> None:
        self.faasd.start(*self.flags)

    def requests_served(self, function: str) -> int:
        """Request records in this node's log of `function`."""
        r = self.faas("logs", function, "--stream", "request", "--json")
        if r.returncode != 0:
            return 0
        return sum(1 for line in r.stdout.splitlines() if line.strip())


class Cluster:
    def __init__(self, work: Path, build_dir: Path, runtime: str, registry_auth: str,
                 first_vm: Optional[VM] = None, first_faasd: Optional[Faasd] = None):
        self.stack = ExitStack()
        try:
            self._build(work, build_dir, runtime, registry_auth, first_vm, first_faasd)
        except BaseException:
            self.stack.close()
            raise

    def _build(self, work, build_dir, runtime, registry_auth, first_vm, first_faasd):
        self.lan = Lan(work / "lan")
        self.stack.callback(self.lan.close)
        vms = []
        for name in NODES:
            if name == "n1" and first_vm is not None:
                vms.append(first_vm)
                continue
            vm = make_vm("sandbox", work / name)
            self.stack.callback(vm.close)
            vms.append(vm)
        addresses = [self.lan.join(vm) for vm in vms]
        self.router_vm = make_vm("sandbox", work / "router")
        self.stack.callback(self.router_vm.close)
        router_address = self.lan.join(self.router_vm)
        self.client = make_vm("sandbox", work / "client")
        self.stack.callback(self.client.close)
        self.lan.join(self.client)
        self.client.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.accept_redirects=0"])
        self.client.run(["ip", "route", "add", "10.0.0.0/8", "via", router_address])

        self.router = Router(self.router_vm, work / "router-bird", router_address)
        self.stack.callback(self.router.stop)
        self.registry = Registry(self.router_vm, work / "registry", addr=router_address)
        self.etcd = Etcd(vms[0], work / "etcd", placed=list(zip(vms, addresses)))

        self.nodes: dict = {}
        for i, (name, vm, address) in enumerate(zip(NODES, vms, addresses), start=1):
            for setting in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"):
                vm.run(["sysctl", "-q", "-w", setting])
            bird = NodeBird(vm, work / f"{name}-bird", address, router_address, asn=65000 + i)
            self.stack.callback(bird.stop)
            self.router.add_peer(name, address, 65000 + i)
            faasd = first_faasd if (i == 1 and first_faasd is not None) else \
                Faasd(vm, build_dir, runtime)
            node = Node(name, vm, faasd, address, bird)
            node.flags = ["--cluster", "--etcd", self.etcd.endpoints, "--node-name", name,
                          "--advertise-address", address, "--node-ttl", f"{TTL}s",
                          "--bird-routes", bird.routes_file, "--bird-socket", bird.socket,
                          "--registry", f"{self.registry.host}/faasd",
                          "--insecure-registry", self.registry.host,
                          "--registry-auth", registry_auth]
            self.nodes[name] = node
        for node in self.nodes.values():
            node.start()
            if node.faasd is not first_faasd:
                self.stack.callback(self._stop, node)
        wait_for(lambda: list(self.router.sessions().values()) == ["Established"] * 3, 20,
                 what="three BGP sessions established")

    @staticmethod
    def _stop(node: Node) -> None:
        if node.faasd.running():
            node.faasd.stop()

    def close(self) -> None:
        self.stack.close()

    # --- what the tests look at ----------------------------------------------------
    def describe(self, function: str, via: str = "n1") -> dict:
        return json.loads(self.nodes[via].faas("describe", function,
                                               check=True).stdout)

    def wait_served(self, function: str, version: int, nodes=NODES, via: str = "n1",
                    timeout: float = 60, routed=None) -> dict:
        """Waits until each of `nodes` reports `version` of `function` ready (in the
        describe answer of `via`), and the router's paths to it are those to `routed`
        (default: `nodes`)."""
        def served():
            r = self.nodes[via].faas("describe", function)
            if r.returncode != 0:
                return None
            answer = json.loads(r.stdout)
            reports = answer.get("cluster", {}).get("nodes", {})
            ok = all(reports.get(n, {}).get("version") == version and
                     reports.get(n, {}).get("ready") for n in nodes)
            return answer if ok else None
        try:
            answer = wait_for(served, timeout, what=f"version {version} of {function} ready "
                                                    f"on {', '.join(nodes)}")
        except AssertionError as e:
            r = self.nodes[via].faas("describe", function)
            raise AssertionError(f"{e}\n{via} describes it: {r.stdout}{r.stderr}\n" +
                                 self.logs()) from None
        self.router.wait_paths(f"{answer['ip']}/32",
                               {self.nodes[n].address for n in (routed or nodes)}, timeout)
        return answer

    def logs(self, lines: int = 30) -> str:
        """The tails of the nodes' logs."""
        return "\n".join(f"--- {name} ---\n" + "\n".join(node.faasd.log().splitlines()[-lines:])
                         for name, node in self.nodes.items())

    def requests(self, ip: str, count: int, seconds: float = 60, pause: float = 0) -> list:
        """`count` requests from the client through the router, one connection each."""
        out = self.client.run(["python3", "-c", CLIENT, ip, str(count), str(seconds),
                               str(pause)], timeout=seconds + 30).stdout
        return json.loads(out)

    def load(self, ip: str, seconds: float, pause: float = 0.02):
        """A steady load in the background: returns the process; its stdout is the
        JSON list of outcomes once it has ended (`finish`)."""
        return self.client.spawn(["python3", "-c", CLIENT, ip, "100000", str(seconds),
                                  str(pause)], log_name="load")

    @staticmethod
    def finish(load) -> list:
        load.wait(timeout=120)
        return json.loads(load.stdout_text())

    def push_image(self, images, handler: str, tag: str) -> str:
        """The handler's image in the cluster's registry as REPO:TAG; its reference."""
        self.registry.push(str(images.archive(handler)), tag)
        return f"{self.registry.host}/{tag}"


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 3)
