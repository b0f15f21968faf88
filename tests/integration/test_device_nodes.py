"""Images with device nodes, as `podman import` of a debootstrap-like tree makes them,
deploy: faasd never creates the nodes, counts them in its answer, says so once in its
log, and `faas new` prints the count on a third line."""

import os
import re
import shutil
import tarfile

import pytest

from lib.helpers import hello_body
from lib.images import import_tree

pytestmark = pytest.mark.integration

# (path, type, major, minor): what debootstrap and mmdebstrap put in /dev, and a disk.
DEVICES = [("dev/console", "c", 5, 1), ("dev/null", "c", 1, 3), ("dev/zero", "c", 1, 5),
           ("dev/loop0", "b", 7, 0)]
# A second name of /dev/null (podman writes it as a second node, tar as a hard link).
HARDLINK = "dev/null-again"
SKIPPED = len(DEVICES) + 1
THIRD_LINE = (f"  Skipped: {SKIPPED} device node(s) of the image; containers get their devices "
              "from the runtime\n")


@pytest.fixture(scope="module")
def device_archive(images, tmp_path_factory):
    """The hello handler in a tree with real device nodes (mknod), imported by podman."""
    base = tmp_path_factory.mktemp("devices")
    tree = base / "tree"
    (tree / "dev").mkdir(parents=True)
    shutil.copy(images.binary("hello"), tree / "handler")
    os.chmod(tree / "handler", 0o755)
    for path, kind, major, minor in DEVICES:
        mode = (0o020666 if kind == "c" else 0o060660)
        os.mknod(tree / path, mode, os.makedev(major, minor))
    os.link(tree / "dev/null", tree / HARDLINK)
    archive = import_tree(tree, base / "devices.docker-archive.tar", ["/handler"])
    # The test means something only if podman kept the nodes in the layer.
    with tarfile.open(archive) as outer:
        layers = [m for m in outer.getmembers() if m.name.endswith(".tar") and m.isfile()]
        nodes = []
        for m in layers:
            with tarfile.open(fileobj=outer.extractfile(m)) as layer:
                nodes += [os.path.normpath(e.name) for e in layer.getmembers()
                          if e.ischr() or e.isblk() or (e.islnk() and "dev/" in e.linkname)]
    assert sorted(nodes) == sorted([p for p, *_ in DEVICES] + [HARDLINK])
    return archive


def device_nodes(faas, root):
    return faas.vm.run(["find", root, "(", "-type", "b", "-o", "-type", "c", ")",
                        "-print"]).stdout


def skip_warnings(faasd, name):
    return [line for line in faasd.log().splitlines()
            if " warning " in line and f"import of {name}: skipped" in line]


def test_image_with_device_nodes_deploys_and_serves(faas, faasd, device_archive):
    r = faasd.faas("new", "devs", stdin_path=faas.vm.import_file(str(device_archive)))
    assert r.returncode == 0, f"{r}\n--- faasd log ---\n{faasd.log()[-3000:]}"
    assert r.stdout == ('✓ Deployed devs at 10.0.0.10\n  Command: ["/handler"]\n' + THIRD_LINE)
    assert r.stderr == ""
    faas.assert_handler_responds("10.0.0.10", expected_body=hello_body())

    root = f"{faasd.state_dir}/images/devs/v1"
    assert device_nodes(faas, root) == ""
    for path in [p for p, *_ in DEVICES] + [HARDLINK]:
        assert faas.vm.run(["stat", f"{root}/{path}"], check=False).returncode != 0, path
    assert faas.vm.run(["stat", "-c", "%F", f"{root}/handler"]).stdout == "regular file\n"

    warnings = skip_warnings(faasd, "devs")
    assert len(warnings) == 1, faasd.log()[-3000:]
    m = re.search(r"import of devs: skipped (\d+) device node\(s\), the first (\S+): containers "
                  r"get their devices from the runtime$", warnings[0])
    assert m, warnings[0]
    assert int(m.group(1)) == SKIPPED
    assert m.group(2) in {"/" + p for p, *_ in DEVICES} | {"/" + HARDLINK}
    faas.assert_bundles_cleaned_up()


def test_deploy_answer_counts_skipped_devices(faas, faasd, device_archive):
    path = faas.vm.import_file(str(device_archive))
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "devs"}, body_path=path)
    assert (status, body) == (200, {"name": "devs", "ip": "10.0.0.10", "cmd": ["/handler"],
                                    "skipped": {"devices": SKIPPED}})
    # A redeploy skips them again: one warning per import.
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "devs"}, body_path=path)
    assert status == 200 and body["skipped"] == {"devices": SKIPPED}, body
    assert len(skip_warnings(faasd, "devs")) == 2
    faas.assert_handler_responds("10.0.0.10", expected_body=hello_body())
    assert device_nodes(faas, f"{faasd.state_dir}/images") == ""


def test_image_without_device_nodes_answers_as_before(faas, faasd):
    d = faas.deploy_handler("hello")  # asserts the two lines, and nothing after them
    assert d.ok
    status, body = faasd.api("POST", "/api/new", headers={"X-Image-Name": "hello"},
                             body_path=faas.image("hello"))
    assert (status, body) == (200, {"name": "hello", "ip": d.ip, "cmd": ["/handler"]})
    assert skip_warnings(faasd, "hello") == []
