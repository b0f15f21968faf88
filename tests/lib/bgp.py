"""BGP for anycast tests: real bird2 processes (Debian's `bird2`) started by a test
inside its VMs, an ECMP router and one speaker per faasd node, all on a LAN
(tests/lib/lan.py).

    Router(vm, work, address)      the upstream router: learns each node's /32s over
                                   eBGP and installs one multipath kernel route per
                                   prefix (L4 hash: connections spread over the nodes)
    NodeBird(vm, work, address, router_address, asn)
                                   a node's bird: announces the routes faasd lists

Timers: BGP hold time 3 s (keepalive 1 s, connect retry 1 s) and BFD on the LAN
(100 ms x 3), so the router drops a dead node's paths within 0.3 to 3 s. Graceful
restart is off on both sides: a session that goes down takes its paths with it.

The routes file (the contract between faasd and its node's bird)
----------------------------------------------------------------
`NodeBird.routes_file` (`WORK/faas-routes.conf`) is included by bird's config inside
the static protocol `faas_functions`:

    protocol static faas_functions { ipv4; include "WORK/faas-routes.conf"; }

faasd owns the file. It holds one line per address the node serves, nothing else:

    route 10.0.0.5/32 blackhole;

(an empty file announces nothing; bird reads it fine). The node's own table never
gets these routes (no kernel protocol export): the address itself is on `lo`, and
the blackhole only gives bird something to announce. After changing the file, faasd
replaces it atomically (write a temporary file beside it, rename it over) and runs

    birdc -s SOCKET configure

where SOCKET is `NodeBird.socket` (`WORK/bird.ctl`). On success birdc exits 0 and
prints `Reconfigured`; bird announces or withdraws the difference without resetting
the BGP session (the router sees it within tens of milliseconds). A file bird cannot
parse makes birdc exit 1 with the parse error on stdout (placed at the line of
bird.conf that follows the include) and leaves the previous routes in force. Only
/32s inside 10.0.0.0/8 are accepted by the router.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from .vm import VM, Spawned, wait_for

TIMERS = ("hold time 3; keepalive time 1; connect retry time 1; connect delay time 1;\n"
          "    error wait time 1, 5; graceful restart off; bfd on;")
BFD_INTERVAL = "100 ms"
BFD_MULTIPLIER = 3
# bind(2) takes at most 107 bytes of path for a unix socket.
MAX_SOCKET_PATH = 100


def _bfd(interface: str) -> str:
    return (f'protocol bfd {{\n  interface "{interface}" {{ interval {BFD_INTERVAL}; '
            f'multiplier {BFD_MULTIPLIER}; }};\n}}\n')


class Bird:
    """One bird process in `vm`: its config, control socket and log under `work`."""

    label = "bird"

    def __init__(self, vm: VM, work: Path):
        self.vm = vm
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "bird.conf"
        self.socket = str(self.work / "bird.ctl")
        self.log_file = self.work / "bird.log"
        if len(self.socket) > MAX_SOCKET_PATH:
            raise ValueError(f"control socket path too long for bind(2): {self.socket}")
        self.proc: Optional[Spawned] = None

    def render(self) -> str:
        raise NotImplementedError

    def _header(self, router_id: str) -> str:
        return (f'router id {router_id};\nlog "{self.log_file}" all;\n'
                f"debug protocols {{ states }};\nprotocol device {{}}\n")

    def _write_config(self) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(self.render())
        tmp.rename(self.config)

    def start(self) -> None:
        """Checks the config, starts bird in the foreground and waits for its socket."""
        self._write_config()
        parsed = self.vm.run(["bird", "-p", "-c", str(self.config)], check=False)
        if parsed.returncode != 0:
            raise AssertionError(f"{self.label}: bird rejects {self.config}:\n{parsed.stderr}"
                                 f"\n{self.config.read_text()}")
        self.proc = self.vm.spawn(["bird", "-f", "-c", str(self.config), "-s", self.socket],
                                  log_name=self.label)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.label}: bird exited {self.proc.returncode}:\n"
                                     f"{self.log()[-3000:]}")
            return "Daemon is up and running" in self.birdc("show", "status", check=False)
        wait_for(ready, 10, what=f"{self.label}: bird to answer on {self.socket}")

    def birdc(self, *args: str, check: bool = True) -> str:
        """Runs `birdc -s SOCKET ARGS...` in the VM; returns its output."""
        r = self.vm.run(["birdc", "-s", self.socket, *args], check=check, timeout=10)
        return r.stdout

    def configure(self) -> None:
        """Rewrites the config, has bird reload it and waits until it has."""
        self._write_config()
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise AssertionError(f"{self.label}: birdc configure said:\n{out}")
        wait_for(lambda: "Daemon is up and running" in self.birdc("show", "status"), 10,
                 what=f"{self.label}: reconfiguration to finish")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (and SIGCONT, should it be frozen), then waits for the exit
        (SIGKILL after 10 s)."""
        if self.running():
            self.proc.kill(signal.SIGTERM)
            self.proc.kill(signal.SIGCONT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.ensure_dead()

    def kill(self) -> None:
        """SIGKILL: bird dies without closing anything itself (the kernel closes its
        TCP sessions; its BFD packets stop)."""
        if self.running():
            self.proc.kill(signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: bird hangs with its sessions open; only BFD and the hold timer can
        tell (stop() still ends it)."""
        if self.running():
            self.proc.kill(signal.SIGSTOP)

    def log(self) -> str:
        """bird's log file, then what it wrote to stderr."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        if self.proc is not None:
            text += self.proc.stderr_text()
        return text


class Router(Bird):
    """The upstream ECMP router in `vm` (already on the LAN as `address`): one eBGP
    session per node added with add_peer(); every accepted /32 becomes a kernel route
    with one next hop per node announcing it. Forwarding on, L4 hashing, and no ICMP
    redirects (they would send a client on the LAN straight to one node)."""

    label = "router"

    def __init__(self, vm: VM, work: Path, address: str, asn: int = 65000,
                 interface: str = "eth0"):
        super().__init__(vm, work)
        self.address = address
        self.asn = asn
        self.interface = interface
        self.peers: dict = {}
        for setting in ("net.ipv4.fib_multipath_hash_policy=1", "net.ipv4.ip_forward=1",
                        "net.ipv4.conf.all.send_redirects=0",
                        f"net.ipv4.conf.{interface}.send_redirects=0"):
            vm.run(["sysctl", "-q", "-w", setting])
        self.start()

    def render(self) -> str:
        text = self._header(self.address) + (
            "protocol kernel {\n"
            "  ipv4 { import none; export where source = RTS_BGP; };\n"
            "  merge paths on;\n"
            "}\n") + _bfd(self.interface)
        for name, (address, asn) in self.peers.items():
            text += (f"protocol bgp {name} {{\n"
                     f"  local as {self.asn};\n  neighbor {address} as {asn};\n  {TIMERS}\n"
                     "  ipv4 { import where net ~ [ 10.0.0.0/8{32,32} ]; export none; };\n"
                     "}\n")
        return text

    def add_peer(self, name: str, address: str, asn: int) -> None:
        """Adds an eBGP session to a node; bird reloads its config at once."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not a bird protocol name: {name!r}")
        self.peers[name] = (address, asn)
        self.configure()

    def paths(self, prefix: str) -> list:
        """The next hops of the kernel route to `prefix` in the router's main table
        (empty when there is none). One next hop is the route's "gateway"; several are
        its "nexthops" (iproute2 6.1; older versions said "multipath")."""
        out = self.vm.run(["ip", "-j", "route", "show", "exact", prefix]).stdout
        hops = []
        for route in json.loads(out or "[]"):
            if "gateway" in route:
                hops.append(route["gateway"])
            for hop in route.get("nexthops", route.get("multipath", [])):
                if "gateway" in hop:
                    hops.append(hop["gateway"])
        return hops

    def wait_paths(self, prefix: str, expected: set, timeout: float) -> float:
        """Waits until the next hops to `prefix` are exactly `expected`; returns the
        seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            seen = set(self.paths(prefix))
            if seen == set(expected):
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"router: next hops to {prefix} are {sorted(seen)}, not {sorted(expected)}"
                    f", after {timeout} s\n--- bird log (tail) ---\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def sessions(self) -> dict:
        """{peer name: BGP state} from `show protocols`: "Established", "Active",
        "Connect"... (the protocol's state, e.g. "down", when bird shows no BGP state)."""
        states = {}
        for line in self.birdc("show", "protocols").splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[0] in self.peers and fields[1] == "BGP":
                states[fields[0]] = fields[5] if len(fields) > 5 else fields[3]
        return states


    def bfd_sessions(self) -> dict:
        """{neighbor address: BFD state} from `show bfd sessions`: "Up", "Down", "Init"."""
        states = {}
        for line in self.birdc("show", "bfd", "sessions").splitlines():
            fields = line.split()
            if len(fields) >= 3 and re.fullmatch(r"[0-9.]+", fields[0]):
                states[fields[0]] = fields[2]
        return states


class NodeBird(Bird):
    """A faasd node's bird in `vm` (on the LAN as `address`): announces what the routes
    file lists (see the module docstring) to the router over eBGP, installs nothing."""

    def __init__(self, vm: VM, work: Path, address: str, router_address: str, asn: int,
                 router_asn: int = 65000, interface: str = "eth0"):
        super().__init__(vm, work)
        self.label = f"bird-{address}"
        self.address = address
        self.router_address = router_address
        self.asn = asn
        self.router_asn = router_asn
        self.interface = interface
        self.routes_file = str(self.work / "faas-routes.conf")
        Path(self.routes_file).write_text("")
        self.start()

    def render(self) -> str:
        return self._header(self.address) + (
            f'protocol static faas_functions {{\n  ipv4;\n  include "{self.routes_file}";\n}}\n'
            f"protocol bgp upstream {{\n"
            f"  local as {self.asn};\n  neighbor {self.router_address} as {self.router_asn};\n"
            f"  {TIMERS}\n"
            '  ipv4 { import none; export where proto = "faas_functions"; next hop self; };\n'
            "}\n") + _bfd(self.interface)

    def announce(self, *prefixes: str) -> None:
        """Does what faasd does: writes the routes file (atomically) listing `prefixes`
        and has bird reload it."""
        for p in prefixes:
            ipaddress.ip_network(p)
        tmp = Path(self.routes_file + ".tmp")
        tmp.write_text("".join(f"route {p} blackhole;\n" for p in prefixes))
        tmp.rename(self.routes_file)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise AssertionError(f"{self.label}: birdc configure said:\n{out}")
