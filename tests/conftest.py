"""Fixtures of the black-box tiers. See docs/TESTING.md.

    vm               a fresh VM per test (sandbox: network + mount namespaces)
    images           builds and caches the handler images (session)
    faasd_unstarted  a Faasd bound to the vm, not started; checked at teardown
    faasd            the same, started with the args of @pytest.mark.faasd_args(...)
    faas             FaaSTestHelper over `faasd` (deploy, request, inspect, assert)
    faas_unstarted   FaaSTestHelper over `faasd_unstarted`

`--runtime NAME` (default runc) makes every faasd the harness starts run its
containers with that OCI runtime (e.g. crun). Tests marked `cgroup_hybrid` or
`cgroup_v2` need the VM's cgroups in that layout and are deselected elsewhere.

At teardown every faasd still running is stopped with SIGTERM and must exit 0 and
leave nothing behind: no lo:faas address, bundle, runc container or process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.daemon import Faasd  # noqa: E402
from lib.helpers import FaaSTestHelper  # noqa: E402
from lib.images import ImageBuilder  # noqa: E402
from lib.vm import make_vm, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "stress", "cluster")


def pytest_addoption(parser):
    group = parser.getgroup("faasd")
    group.addoption("--vm", choices=("sandbox", "qemu"), default="sandbox",
                    help="where faasd runs: sandbox (network+mount namespaces, default) or qemu")
    group.addoption("--build-dir", default=os.environ.get("FAASD_BUILD_DIR", str(REPO / "build")),
                    help="CMake build dir holding src/faasd and src/faas (default: build/)")
    group.addoption("--image-cache", default=os.environ.get("FAASD_TEST_IMAGE_CACHE",
                                                            "/tmp/faasd-test-images"),
                    help="where built handler images are cached")
    group.addoption("--runtime", default="runc",
                    help="the OCI runtime every faasd runs its containers with (default runc; "
                         "crun needs cgroup v2, e.g. --vm=qemu)")


def pytest_configure(config):
    runtime = config.getoption("--runtime")
    if not shutil.which(runtime):
        raise pytest.UsageError(f"--runtime {runtime}: not found in PATH "
                                f"(apt-get install {runtime})")
    if config.getoption("--vm") == "qemu":
        from lib.qemu_vm import check_host
        problems = check_host()
        if problems:
            raise pytest.UsageError("--vm=qemu cannot run here: " + "; ".join(problems))


def pytest_unconfigure(config):
    if config.getoption("--vm") == "qemu":
        from lib.qemu_vm import shutdown_session
        shutdown_session()


def pytest_collection_modifyitems(config, items):
    # The qemu backend's own self-tests need the qemu backend: without it they are
    # deselected (not skipped: nothing is missing, it is another configuration).
    if config.getoption("--vm") != "qemu":
        qemu_only = [i for i in items if "vmtest_backend" in i.nodeid.split("/")]
        if qemu_only:
            config.hook.pytest_deselected(items=qemu_only)
            items[:] = [i for i in items if i not in qemu_only]
    _deselect_other_cgroup_layouts(config, items)
    untiered = [i.nodeid for i in items if not any(i.get_closest_marker(t) for t in TIERS)]
    if untiered:
        raise pytest.UsageError("tests without a tier marker (unit, integration, stress or cluster): "
                                + ", ".join(untiered))


def cgroup_layout(backend: str) -> str:
    """The cgroup layout faasd sees in a VM of `backend`: "v2" (one cgroup2 tree),
    "hybrid" (v1 hierarchies plus a cgroup2 mount) or "v1". The qemu guest mounts
    cgroup v2 only; the sandbox shares the host's cgroups."""
    if backend == "qemu":
        return "v2"
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    types = {f.split()[2] for f in mounts if len(f.split()) > 2}
    if "cgroup" not in types:
        return "v2"
    return "hybrid" if "cgroup2" in types else "v1"


def _deselect_other_cgroup_layouts(config, items):
    # A test of what a runtime does with one cgroup layout means nothing with another:
    # deselected (not skipped), like the qemu backend's self-tests without qemu.
    layout = cgroup_layout(config.getoption("--vm"))
    other = [i for i in items
             if any(i.get_closest_marker(m) for m in ("cgroup_hybrid", "cgroup_v2"))
             and not i.get_closest_marker(f"cgroup_{layout}")]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [i for i in items if i not in other]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _host_addresses():
    """The host's addresses faasd could touch: those on lo and any in 10.0.0.0/8
    (other interfaces may legitimately change while a long run goes on)."""
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    return sorted((link["ifname"], a["family"], a["local"], a["prefixlen"], a.get("label", ""))
                  for link in json.loads(out) for a in link.get("addr_info", [])
                  if link["ifname"] == "lo" or a["local"].startswith("10."))


@pytest.fixture(scope="session")
def host_addresses_at_start():
    return _host_addresses()


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched(host_addresses_at_start):
    """Session guard: the host's lo and 10.x addresses are the same after the whole run."""
    yield
    after = _host_addresses()
    assert after == host_addresses_at_start, "the test run changed the host's addresses"


@pytest.fixture(scope="session")
def build_dir(request) -> Path:
    d = Path(request.config.getoption("--build-dir")) / "src"
    missing = [b for b in ("faasd", "faas") if not os.access(d / b, os.X_OK)]
    if missing:
        pytest.exit(f"{', '.join(missing)} not built in {d}: run scripts/build.sh first", 2)
    return d


@pytest.fixture(scope="session")
def images(request) -> ImageBuilder:
    return ImageBuilder(Path(request.config.getoption("--image-cache")))


@pytest.fixture
def vm(request, tmp_path):
    """A fresh VM per test: namespaces cost ~10 ms, and a test that leaves addresses,
    containers or files behind cannot affect the next one."""
    machine = make_vm(request.config.getoption("--vm"), tmp_path / "vm")
    try:
        yield machine
    finally:
        machine.close()


def _attach_log(request, daemon: Faasd) -> None:
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                 for w in ("setup", "call"))
    if failed:
        request.node.add_report_section("teardown", "faasd log (tail)", daemon.log()[-20000:])


@pytest.fixture
def faasd_unstarted(request, vm, build_dir):
    daemon = Faasd(vm, build_dir, request.config.getoption("--runtime"))
    yield daemon
    _attach_log(request, daemon)
    if daemon.proc is None:
        return
    # Clients and uploads the test left running are not faasd's leftovers.
    vm.kill_spawned(keep={daemon.proc.pid})
    if daemon.running():
        rc = daemon.stop()
        assert rc == 0, f"faasd exited {rc} on SIGTERM:\n{daemon.log()[-5000:]}"
    # Addresses, bundles, runc state and cgroups must be gone the moment faasd has
    # exited; processes get a short grace for the kernel to finish killing them.
    left = daemon.leftovers()
    if set(left) == {"processes"}:
        try:
            wait_for(lambda: not daemon.related_processes(), 5, what="processes to exit")
            left = {}
        except AssertionError:
            left = daemon.leftovers()
    assert not left, (f"faasd left things behind after SIGTERM: {left}\n"
                      f"--- log ---\n{daemon.log()[-5000:]}")


@pytest.fixture
def faasd(request, faasd_unstarted):
    marker = request.node.get_closest_marker("faasd_args")
    args = [str(a) for a in marker.args] if marker else []
    return faasd_unstarted.start(*args)


@pytest.fixture
def faas(vm, faasd, images) -> FaaSTestHelper:
    return FaaSTestHelper(vm, faasd, images)


@pytest.fixture
def faas_unstarted(vm, faasd_unstarted, images) -> FaaSTestHelper:
    return FaaSTestHelper(vm, faasd_unstarted, images)


@pytest.fixture
def anonymous(tmp_path):
    """faasd's --registry-auth for anonymous pulls and pushes (never the host's own file)."""
    path = tmp_path / "no-auth.json"
    path.write_text("{}")
    return str(path)
