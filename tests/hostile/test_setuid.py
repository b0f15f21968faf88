"""setuid/setgid files in an image. faasd keeps the bits in the unpacked rootfs (as
docker does: some images need them inside the container, where noNewPrivileges makes
them inert anyway). So they must stay contained on the host: no unprivileged host
user may run them and gain the identity they carry.

On a real host the state dir sits in /var/lib, whose parents anyone may traverse; the
sandbox's base directory is 0700, so the test opens it up like /var/lib first."""

import pytest

from hostile_lib import start_in_open_parent
from lib.images import make_docker_archive, tar_entry

pytestmark = pytest.mark.integration

# An unprivileged user: setpriv itself still holds root's capabilities until it execs,
# so the program under test is started by a shell that setpriv started.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
          'exec "$0" whoami']


@pytest.mark.parametrize("mode", ["root", "userns"])
def test_setuid_file_of_an_image_grants_nothing_on_the_host(faas_unstarted, faasd_unstarted,
                                                            images, mode):
    """In the default mode STATE is 0700: nobody reaches the rootfs.

    Regression in --userns mode: STATE is 0711 there and images/ traversable by the
    mapped root's group (it must reach its rootfs), and shifting the owners used to put the
    setuid/setgid bits back: any local user could run STATE/images/NAME/vN/<setuid file>
    as host uid --userns-base. The shift now clears those bits (containers have
    noNewPrivileges, so they never worked inside anyway)."""
    faas, faasd, vm = faas_unstarted, faasd_unstarted, faas_unstarted.vm
    start_in_open_parent(faasd, *(["--userns"] if mode == "userns" else []))
    probe = images.binary("setuid-probe").read_bytes()
    archive = faas.put_archive(make_docker_archive([[
        tar_entry("handler", data=probe, mode=0o755),
        tar_entry("suid", data=probe, mode=0o4755),
        tar_entry("sgid", data=probe, mode=0o2755)]]), "setuid.tar")
    d = faas.deploy_handler("fn", archive=archive)
    # Inside, the handler is (mapped) root and stays exactly that.
    r = faas.make_request(d.ip)
    assert r["status"] == 200 and r["complete"], r
    assert r["body"] == "uid=0 euid=0 gid=0 egid=0\n"
    faas.wait_for_cleanup()
    root = f"{faasd.state_dir}/images/fn/v1"
    st = vm.run(["stat", "-c", "%a %u %g", f"{root}/suid", f"{root}/sgid"]).stdout.split("\n")
    if mode == "root":
        # The bits are kept in the rootfs, and an unprivileged host user cannot reach it.
        assert st[:2] == ["4755 0 0", "2755 0 0"]
        for name in ("suid", "sgid"):
            r = vm.run(NOBODY + [f"{root}/{name}"], check=False)
            assert r.returncode != 0 and "Permission denied" in r.stderr, \
                f"an unprivileged host user ran {name}: {r.stdout.strip()!r}"
    else:
        # The mapped root owns the files, with the bits cleared: running them gives an
        # unprivileged host user nothing.
        assert st[:2] == ["755 100000 100000", "755 100000 100000"]
        for name in ("suid", "sgid"):
            r = vm.run(NOBODY + [f"{root}/{name}"], check=False)
            assert "euid=100000" not in r.stdout and "egid=100000" not in r.stdout, r
