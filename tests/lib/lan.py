"""A LAN between test VMs: a bridge in a network namespace of its own (the switch)
and a veth from each VM to it, addresses 10.99.0.N/24. Everything lives in
namespaces the test created; the host's namespace only runs `ip` and `nsenter`."""

from __future__ import annotations

from pathlib import Path

from .vm import VM, make_vm

SUBNET = "10.99.0"


class Lan:
    def __init__(self, work: Path):
        self.switch = make_vm("sandbox", work / "switch")
        self.switch.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.run(["ip", "link", "set", "br0", "up"])
        self.members: list = []

    def join(self, vm: VM) -> str:
        """Plugs `vm` in (its side is eth0, up); returns its address."""
        n = len(self.members) + 1
        port = f"p{n}"
        vm.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", str(self.switch.holder_pid)])
        self.switch.run(["ip", "link", "set", port, "master", "br0", "up"])
        address = f"{SUBNET}.{n}"
        vm.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
        vm.run(["ip", "link", "set", "eth0", "up"])
        self.members.append(vm)
        return address

    @staticmethod
    def unplug(vm: VM) -> None:
        """Cuts `vm` off the LAN (its eth0 down)."""
        vm.run(["ip", "link", "set", "eth0", "down"])

    @staticmethod
    def plug(vm: VM) -> None:
        vm.run(["ip", "link", "set", "eth0", "up"])

    def close(self) -> None:
        self.switch.close()
