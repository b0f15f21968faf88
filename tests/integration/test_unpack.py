"""Unit tier: the image importer through `faasd unpack IMAGE DIR` (no daemon).

These live here because tests/unit/ holds the GoogleTest sources; they carry the
`unit` marker and need only the vm fixture (the command still runs inside the VM).
"""

import hashlib
import json
import uuid

import pytest

from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.unit


@pytest.fixture
def unpack(vm, build_dir):
    faasd_bin = vm.import_file(str(build_dir / "faasd"))

    def run(archive: str, dest: str):
        return vm.run([faasd_bin, "unpack", archive, dest], check=False, timeout=120)

    return run


@pytest.fixture
def workdir(vm):
    """An empty directory inside the VM (on its run-dir tmpfs)."""
    d = f"{vm.run_dir}/unpack-{uuid.uuid4().hex[:8]}"
    vm.run(["mkdir", "-p", d])
    return d


def tree(vm, path):
    r = vm.run(["find", path, "-mindepth", "1", "-printf", "%P\n"])
    return sorted(r.stdout.split())


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_unpack_podman_archive_of_hello(vm, images, unpack, workdir, fmt):
    archive = vm.import_file(str(images.archive("hello", fmt)))
    dest = f"{workdir}/rootfs"
    r = unpack(archive, dest)
    assert r.returncode == 0, r
    config = json.loads(r.stdout)
    assert config["cmd"] == ["/handler"]
    assert config["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert config["working_dir"] == ""
    assert config["user"] == ""
    assert config["layers"] == 1
    assert config["files"] == 1
    expected = images.binary("hello").read_bytes()
    assert config["bytes"] == len(expected)
    # The rootfs holds exactly the one file of the image, byte for byte, executable.
    assert tree(vm, dest) == ["handler"]
    got = vm.read_file(f"{dest}/handler")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()
    mode = vm.run(["stat", "-c", "%a", f"{dest}/handler"]).stdout.strip()
    assert mode == "755"
    # The importer's spool directory (DIR.work) is gone.
    assert tree(vm, workdir) == ["rootfs", "rootfs/handler"]


def escape_target(vm, workdir):
    """A directory outside DIR that a hostile archive tries to write into."""
    outside = f"{workdir}/outside"
    vm.run(["mkdir", "-p", outside])
    return outside


def assert_refused(r, *words):
    assert r.returncode != 0, f"hostile archive accepted: {r}"
    assert r.stderr.startswith("Error: "), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def assert_nothing_outside(vm, workdir, dest):
    """Only DIR (possibly with partial content) and the untouched `outside` dir exist."""
    found = tree(vm, workdir)
    stray = [p for p in found if p not in ("outside", "rootfs") and not p.startswith("rootfs/")]
    assert stray == [], f"written outside {dest}: {stray}"
    assert tree(vm, f"{workdir}/outside") == []


def test_unpack_refuses_dotdot_entry_in_layer(vm, unpack, workdir):
    escape_target(vm, workdir)
    dest = f"{workdir}/rootfs"
    archive = make_docker_archive([[
        tar_entry("handler", data=b"#!/bin/true\n"),
        tar_entry("../outside/pwned", data=b"escaped\n"),
    ]])
    path = f"{workdir}.tar"
    vm.write_file(path, archive)
    r = unpack(path, dest)
    assert_refused(r, "../outside/pwned", "escapes")
    assert_nothing_outside(vm, workdir, dest)


def test_unpack_refuses_dotdot_member_of_outer_archive(vm, unpack, workdir):
    escape_target(vm, workdir)
    dest = f"{workdir}/rootfs"
    archive = make_docker_archive([[tar_entry("handler", data=b"x")]], extra_members=[
        tar_entry("../outside/pwned", data=b"escaped\n"),
        tar_entry("../../outside/pwned", data=b"escaped\n"),
    ])
    path = f"{workdir}.tar"
    vm.write_file(path, archive)
    r = unpack(path, dest)
    assert_refused(r, "escapes")
    assert_nothing_outside(vm, workdir, dest)
    # Nor next to the spool dir (DIR.work), where a naive spooler would put it.
    assert not vm.exists(f"{workdir}/pwned")


def test_unpack_refuses_symlink_escape(vm, unpack, workdir):
    outside = escape_target(vm, workdir)
    dest = f"{workdir}/rootfs"
    archive = make_docker_archive([
        [tar_entry("evil", "symlink", target=outside)],      # absolute, to a real dir
        [tar_entry("evil/pwned", data=b"escaped\n")],         # written through it
    ])
    path = f"{workdir}.tar"
    vm.write_file(path, archive)
    r = unpack(path, dest)
    assert_refused(r, "escapes")
    assert_nothing_outside(vm, workdir, dest)
