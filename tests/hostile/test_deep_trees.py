"""Deep directory trees. A 2,000-level image used to be unpacked, and removing such a
tree held two fds per level: the removal failed with EMFILE, left its
STATE/images/NAME/.new-* behind, and at the next start the stale-dir clean-up made
faasd refuse to start (`cannot start: dup: Too many open files`).

* An entry deeper than the import limit (256 path components) refuses the image with
  a clear 400 before anything of its layer is written: nothing is left in the state
  dir and the previous version keeps serving.
* A 3,000-level leftover (deeper than PATH_MAX allows to name) in the state dir is
  removed at start by a faasd whose (soft) fd limit is 128.
* A leftover that cannot be removed at all (a mount inside it) is logged, and faasd
  starts anyway.
"""

import os
import re

import pytest

from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

LEVELS = 2000
REFUSAL = f"path a/a/a/... is {LEVELS} levels deep; the limit is 256"

# Builds DIR/a/a/... LEVELS levels deep, a file at each level, with *at() calls
# (the paths are longer than PATH_MAX).
MAKE_DEEP = """
import os, sys
top, levels = sys.argv[1], int(sys.argv[2])
os.makedirs(top)
fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(levels):
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.mkdir("a", dir_fd=fd)
    fd, old = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
    os.close(old)
"""


def make_deep_dir(vm, path: str, levels: int) -> None:
    vm.run(["python3", "-c", MAKE_DEEP, path, str(levels)], timeout=120)


def state_listing(vm, faasd) -> list:
    """Everything in the state dir down to images/NAME/*, and all of tmp/."""
    r = vm.run(["find", faasd.state_dir, "-path", f"{faasd.state_dir}/bundles", "-prune", "-o",
                "-maxdepth", "3", "-print"])
    return sorted(r.stdout.split())


def test_deep_image_is_refused_and_leaves_nothing(faas, faasd, images, bystander):
    vm = faas.vm
    old = faas.deploy_handler("fn")
    faas.wait_for_cleanup()
    bystander.mark()
    before = state_listing(vm, faasd)
    hello = images.binary("hello").read_bytes()
    archive = faas.put_archive(make_docker_archive([[
        tar_entry("handler", data=hello, mode=0o755),
        tar_entry("/".join(["a"] * LEVELS), data=b"deep\n", mode=0o644)]]), "deep.tar")

    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "fn"},
                             body_path=archive)
    assert status == 400, (status, body)
    assert REFUSAL in body["error"], body
    assert len(body["error"]) < 300, "the error quotes the whole path"
    r = faasd.faas("new", "fn", stdin_path=archive)
    assert r.returncode != 0 and REFUSAL in r.stdout + r.stderr, r

    assert state_listing(vm, faasd) == before, "the refused deploys left something behind"
    assert vm.listdir(f"{faasd.state_dir}/tmp") == []
    faas.assert_handler_responds(old.ip)
    bystander.assert_unharmed()


def deployed_then_stopped(faas):
    """Starts faasd, deploys hello as `fn` and stops faasd; returns the deploy."""
    faas.faasd.start()
    d = faas.deploy_handler("fn")
    faas.faasd.stop()
    return d


def test_deep_leftover_is_removed_at_start_under_a_low_fd_limit(faas_unstarted, faasd_unstarted):
    faas, faasd, vm = faas_unstarted, faasd_unstarted, faas_unstarted.vm
    d = deployed_then_stopped(faas)
    images_dir = f"{faasd.state_dir}/images"
    make_deep_dir(vm, f"{images_dir}/fn/.new-1-1", 3000)  # an import a crash interrupted
    make_deep_dir(vm, f"{images_dir}/gone/v1", 3000)  # a function the registry lacks

    # faasd raises its soft limit to the hard one: both low.
    faasd.launcher = ["prlimit", "--nofile=128:128", "--"]
    faasd.start()
    limits = vm.run(["cat", f"/proc/{faasd.pid}/limits"]).stdout
    assert re.search(r"Max open files +128 +128 ", limits), limits
    assert vm.listdir(f"{images_dir}/fn") == ["rootfs", "v1"]
    assert vm.listdir(images_dir) == ["fn"]
    assert "left something behind" not in faasd.log()
    faas.assert_handler_responds(d.ip)


def test_leftover_that_cannot_be_removed_does_not_stop_faasd(faas_unstarted, faasd_unstarted):
    faas, faasd, vm = faas_unstarted, faasd_unstarted, faas_unstarted.vm
    d = deployed_then_stopped(faas)
    stuck = f"{faasd.state_dir}/images/fn/.new-1-1"
    vm.run(["mkdir", "-p", f"{stuck}/mnt"])
    vm.run(["mount", "-t", "tmpfs", "faasd-test-stuck", f"{stuck}/mnt"])
    try:
        faasd.start()
        assert f"state dir clean-up left something behind: remove {stuck}: " \
               "refusing to remove mount point mnt" in faasd.log()
        faas.assert_handler_responds(d.ip)
        d2 = faas.deploy_handler("fn2")
        faas.assert_handler_responds(d2.ip)
    finally:
        vm.run(["umount", f"{stuck}/mnt"], check=False)
    assert os.path.basename(stuck) in vm.listdir(os.path.dirname(stuck))
