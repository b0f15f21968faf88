"""A disk that fills up during an import: the deploy fails with a clear error and
changes nothing; the previous version keeps serving."""

import os

import pytest

from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

MB = 1 << 20


def avail_and_used(vm, path: str) -> tuple:
    out = vm.run(["df", "-B1", "--output=avail,used", path]).stdout.split("\n")[1].split()
    return int(out[0]), int(out[1])


def test_disk_full_during_import_rolls_back(faas, faasd):
    hello = faas.deploy_handler("fn", "hello")
    registry_before = faas.read_registry()
    # 48 MB of incompressible data, more than is left: the layer is written once, as
    # it arrives, so the import fails half-way through it.
    payload = os.urandom(48 * MB)
    archive = faas.put_archive(make_docker_archive([[
        tar_entry("handler", data=faas.images.binary("hello").read_bytes(), mode=0o755),
        tar_entry("big", data=payload, mode=0o644),
    ]]))
    _, used = avail_and_used(faas.vm, faasd.state_dir)
    faas.vm.run(["mount", "-o", f"remount,size={used + 36 * MB}", faasd.state_dir])
    avail, _ = avail_and_used(faas.vm, faasd.state_dir)
    assert 30 * MB < avail < 40 * MB, avail

    r = faasd.faas("new", "fn", stdin_path=archive)
    assert r.returncode == 1, r
    assert r.stderr.startswith("Error: ") and "No space left on device" in r.stderr, r.stderr

    # Nothing changed: registry, version directories, spool, and the old version serves.
    assert faas.read_registry() == registry_before
    assert faas.vm.listdir(f"{faasd.state_dir}/images/fn") == ["rootfs", "v1"]
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    faas.assert_handler_responds(hello.ip)
    after, _ = avail_and_used(faas.vm, faasd.state_dir)
    assert after >= avail - MB, "the failed import's files were not all removed"
    faas.assert_bundles_cleaned_up()
