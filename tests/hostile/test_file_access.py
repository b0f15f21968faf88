"""Function files on the host. With --userns, STATE/images/NAME and its vN used to be
0755 under 0711 parents, and the files kept the image's modes: any local user read
/app/secret.txt of a function and overwrote a 0666 file that the handler then read.

Now images/ and images/NAME are root:--userns-base 0710 (the container's root must
traverse them to its rootfs before pivot_root), root's alone (0700) without --userns,
and vN keeps the mode of a container's `/`, so that a handler that is not root still
runs. An unprivileged local user can read, write or list nothing of a function (the
state dir's parents are opened up as /var/lib's are)."""

import pytest

from hostile_lib import start_in_open_parent
from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

# An unprivileged local user (setpriv holds root's capabilities until it execs).
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(vm, *argv: str):
    return vm.run(NOBODY + list(argv), check=False)


@pytest.mark.parametrize("mode", ["root", "userns"])
def test_local_user_can_neither_read_nor_write_function_files(faas_unstarted, faasd_unstarted,
                                                              images, mode):
    faas, faasd, vm = faas_unstarted, faasd_unstarted, faas_unstarted.vm
    start_in_open_parent(faasd, *(["--userns"] if mode == "userns" else []))
    hello = images.binary("hello").read_bytes()
    archive = faas.put_archive(make_docker_archive([[
        tar_entry("handler", data=hello, mode=0o755),
        tar_entry("app", kind="dir", mode=0o755),
        tar_entry("app/secret.txt", data=b"s3cret\n", mode=0o644),
        tar_entry("app/shared.txt", data=b"original\n", mode=0o666)]], user="1000:1000"),
        "files.tar")
    d = faas.deploy_handler("fn", archive=archive)
    images_dir = f"{faasd.state_dir}/images"
    app = f"{images_dir}/fn/v1/app"

    r = as_nobody(vm, "cat", f"{app}/secret.txt")
    assert r.returncode != 0 and "s3cret" not in r.stdout, f"a local user read the secret: {r}"
    r = as_nobody(vm, "sh", "-c", f"echo pwned > {app}/shared.txt")
    assert r.returncode != 0, f"a local user wrote a function file: {r}"
    assert vm.read_file(f"{app}/shared.txt") == b"original\n"
    r = as_nobody(vm, "cat", f"{images_dir}/fn/rootfs/app/secret.txt")
    assert r.returncode != 0 and "s3cret" not in r.stdout, r
    for path in (images_dir, f"{images_dir}/fn"):
        r = as_nobody(vm, "ls", path)
        assert r.returncode != 0 and "Permission denied" in r.stderr, f"listed {path}: {r}"

    st = vm.run(["stat", "-c", "%a %u %g", faasd.state_dir, images_dir, f"{images_dir}/fn",
                 f"{images_dir}/fn/v1", f"{faasd.state_dir}/tmp"]).stdout.split("\n")
    if mode == "userns":
        assert st[:5] == ["711 0 0", "710 0 100000", "710 0 100000", "755 100000 100000",
                          "700 0 0"]
    else:
        assert st[:5] == ["700 0 0", "700 0 0", "700 0 0", "755 0 0", "700 0 0"]
    # The handler runs as uid 1000 and still reaches its `/`.
    faas.assert_handler_responds(d.ip)


def test_state_dir_of_an_older_faasd_is_closed_at_start(faas_unstarted, faasd_unstarted):
    """An upgrade: function directories an older faasd left open to all are fixed up."""
    faas, faasd, vm = faas_unstarted, faasd_unstarted, faas_unstarted.vm
    start_in_open_parent(faasd, "--userns")
    d = faas.deploy_handler("fn")
    faasd.stop()
    images_dir = f"{faasd.state_dir}/images"
    vm.run(["chmod", "0755", faasd.state_dir, images_dir, f"{images_dir}/fn"])
    vm.run(["chown", "0:0", images_dir, f"{images_dir}/fn"])
    faasd.start("--userns")
    st = vm.run(["stat", "-c", "%a %u %g", images_dir, f"{images_dir}/fn"]).stdout.split("\n")
    assert st[:2] == ["710 0 100000", "710 0 100000"]
    r = as_nobody(vm, "ls", f"{images_dir}/fn")
    assert r.returncode != 0, r
    faas.assert_handler_responds(d.ip)
