"""The test harness itself: the sandbox VM isolates faasd from the host."""

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.integration


def host_addresses():
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    return sorted((link["ifname"], a["local"], a["prefixlen"], a.get("label", ""))
                  for link in json.loads(out) for a in link.get("addr_info", []))


def test_host_addresses_untouched_by_faasd(faas, faasd, vm):
    before = host_addresses()
    ips = [faas.deploy_handler(f"fn{i}").ip for i in range(3)]
    for ip in ips:
        faas.assert_handler_responds(ip)
    # Inside the VM the addresses exist ...
    assert faasd.faas_addresses() == sorted(ips)
    # ... on the host nothing changed, and no 10.x address appeared.
    assert host_addresses() == before
    assert not [a for a in host_addresses() if a[1].startswith("10.0.0.")]
    if vm.name == "sandbox":
        # faasd runs in the sandbox's network namespace, not the host's.
        assert os.readlink(f"/proc/{faasd.pid}/ns/net") == vm.netns != os.readlink("/proc/self/ns/net")
    assert faasd.stop() == 0
    assert host_addresses() == before


def test_state_and_run_dirs_are_tmpfs_only_inside(vm):
    mounts = vm.run(["cat", "/proc/self/mounts"]).stdout
    inside = {line.split()[1]: line.split()[2] for line in mounts.splitlines()}
    assert inside.get(vm.state_dir) == "tmpfs"
    assert inside.get(vm.run_dir) == "tmpfs"
    vm.write_file(f"{vm.state_dir}/marker", b"inside")
    assert vm.read_file(f"{vm.state_dir}/marker") == b"inside"
    # On the host the mount points are plain empty directories.
    with open("/proc/self/mounts") as f:
        host = {line.split()[1] for line in f}
    assert vm.state_dir not in host and vm.run_dir not in host
    assert os.listdir(vm.state_dir) == []


def test_loopback_is_up_and_private(vm):
    r = vm.run(["ip", "-j", "addr", "show"])
    links = json.loads(r.stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert "UP" in links[0]["flags"]
    assert [a["local"] for a in links[0]["addr_info"] if a["family"] == "inet"] == ["127.0.0.1"]
