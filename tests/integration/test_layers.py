"""Layers kept by diff_id under STATE/layers and shared by the versions built from
them: versions and functions from one base share its files (hard links, one copy on
disk), another function's whiteouts and replacements never reach them, and a layer
goes with the last version directory that uses it, at start-up too."""

import re

import pytest

from lib.images import make_docker_archive, tar_entry
from lib.vm import wait_for

pytestmark = pytest.mark.integration

BASE = [
    tar_entry("etc", kind="dir"),
    tar_entry("etc/shared.conf", data=b"base\n"),
    tar_entry("etc/replaced.conf", data=b"base\n"),
    tar_entry("data", kind="dir"),
    tar_entry("data/blob", data=bytes(range(256)) * 4096),  # 1 MiB
]


def archive(faas, *top_layers, name="img.tar") -> str:
    handler = [tar_entry("handler", data=faas.images.binary("hello").read_bytes(), mode=0o755)]
    return faas.put_archive(make_docker_archive([BASE, handler, *top_layers]), name)


def deploy(faasd, name, path):
    r = faasd.faas("new", name, stdin_path=path)
    assert r.returncode == 0, r
    return re.search(r"at (\S+)", r.stdout).group(1)


def stored_layers(faas, faasd) -> list:
    return [n for n in faas.vm.listdir(f"{faasd.state_dir}/layers") if n.startswith("sha256-")]


def inode(faas, path) -> int:
    return faas.stat(path)[path]["ino"]


def du_kib(faas, *paths) -> int:
    out = faas.vm.run(["du", "-sk", "--total", *paths]).stdout.strip().split("\n")[-1]
    return int(out.split()[0])


def test_functions_from_one_base_share_its_files(faas, faasd):
    images = f"{faasd.state_dir}/images"
    a_ip = deploy(faasd, "a", archive(faas, name="a.tar"))
    # b's own layer removes one file of the base and replaces another.
    b_ip = deploy(faasd, "b", archive(faas, [
        tar_entry("etc/.wh.shared.conf"),
        tar_entry("etc/replaced.conf", data=b"b's own\n"),
    ], name="b.tar"))
    for ip in (a_ip, b_ip):
        faas.assert_handler_responds(ip)

    a, b = f"{images}/a/v1", f"{images}/b/v1"
    assert inode(faas, f"{a}/data/blob") == inode(faas, f"{b}/data/blob")
    assert inode(faas, f"{a}/handler") == inode(faas, f"{b}/handler")
    assert inode(faas, f"{a}/etc") != inode(faas, f"{b}/etc"), "directories are each tree's"
    # b's whiteout and replacement changed b's tree only.
    assert faas.vm.run(["cat", f"{a}/etc/shared.conf", f"{a}/etc/replaced.conf"]).stdout == \
        "base\nbase\n"
    assert not faas.stat(f"{b}/etc/shared.conf")[f"{b}/etc/shared.conf"]
    assert faas.vm.run(["cat", f"{b}/etc/replaced.conf"]).stdout == "b's own\n"
    assert len(stored_layers(faas, faasd)) == 3, "the base, the handler, b's own layer"
    # One copy of the base's MiB on disk: du counts a file linked twice once.
    assert du_kib(faas, a, b) < du_kib(faas, a) + 512


def test_a_redeploy_shares_the_unchanged_layers_with_the_version_before(faas, faasd):
    images = f"{faasd.state_dir}/images/fn"
    deploy(faasd, "fn", archive(faas, [tar_entry("version", data=b"1\n")], name="v1.tar"))
    ip = deploy(faasd, "fn", archive(faas, [tar_entry("version", data=b"2\n")], name="v2.tar"))
    faas.assert_handler_responds(ip)
    assert inode(faas, f"{images}/v1/data/blob") == inode(faas, f"{images}/v2/data/blob")
    assert faas.vm.run(["cat", f"{images}/v1/version", f"{images}/v2/version"]).stdout == \
        "1\n2\n"
    assert len(stored_layers(faas, faasd)) == 4


def test_layers_go_with_the_last_version_using_them(faas, faasd):
    deploy(faasd, "a", archive(faas, name="a.tar"))
    deploy(faasd, "b", archive(faas, [tar_entry("b-only", data=b"b\n")], name="b.tar"))
    assert len(stored_layers(faas, faasd)) == 3
    faasd.faas("rm", "b", check=True)
    wait_for(lambda: len(stored_layers(faas, faasd)) == 2, timeout=10,
             what="b's own layer removed")
    faas.assert_handler_responds(faas.get_handler_ip("a"))
    faasd.faas("rm", "a", check=True)
    wait_for(lambda: not stored_layers(faas, faasd), timeout=10, what="every layer removed")


def test_a_refused_image_leaves_no_layer(faas, faasd):
    broken = make_docker_archive([BASE, [tar_entry("escape", kind="symlink", target="/etc"),
                                         tar_entry("escape/passwd", data=b"x")]])
    r = faasd.faas("new", "fn", stdin_path=faas.put_archive(broken))
    assert r.returncode == 1 and "path escapes the root" in r.stderr, r
    assert faas.vm.listdir(f"{faasd.state_dir}/layers") == []


def test_start_removes_layers_no_version_uses(faas, faasd):
    deploy(faasd, "a", archive(faas))
    kept = sorted(stored_layers(faas, faasd))
    layers = f"{faasd.state_dir}/layers"
    assert faasd.stop() == 0
    # What a faasd killed at the wrong moment leaves: a layer half-extracted, one half
    # removed, and one whose only version directory is gone.
    orphan = f"{layers}/sha256-{'0' * 64}"
    faas.vm.run(["mkdir", "-p", f"{layers}/.new-1-0/tree", f"{layers}/.old-x/tree",
                 f"{orphan}/tree", f"{orphan}/refs"])
    faas.vm.run(["touch", f"{orphan}/meta", f"{orphan}/refs/1"])
    faasd.start()
    assert sorted(faas.vm.listdir(layers)) == kept
    faas.assert_handler_responds(faas.get_handler_ip("a"))
