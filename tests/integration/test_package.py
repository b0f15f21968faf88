"""The install rules and the Debian package (cmake/Packaging.cmake, scripts/package.sh).

The package is built once per test run by scripts/package.sh (a Release build in
build-pkg/), then installed with apt into a clean Debian 12 root made by mmdebstrap
(variant minbase, from this machine's apt sources; its tarball is cached next to the
handler images). apt resolves the package's Depends from the mirror, so an install that
works proves the list; the installed programs then run from /usr/bin inside the root.
No faasd is started: nothing here needs a network namespace, and the only traffic is
apt's to the machine's own Debian mirror.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
LANGS = ("c", "python", "stdio")


def _run(argv, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert p.returncode == 0, (f"{' '.join(map(str, argv))} exited {p.returncode}:\n"
                               f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _project_version() -> str:
    text = (REPO / "CMakeLists.txt").read_text()
    return re.search(r"^project\(faasd VERSION (\S+)", text, re.M).group(1)


def _apt_sources() -> list:
    """The machine's apt sources files that say something, as mmdebstrap takes them."""
    etc = Path("/etc/apt")
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list")) \
        + sorted((etc / "sources.list.d").glob("*.sources"))
    return [f for f in files if f.is_file()
            and any(ln.strip() and not ln.lstrip().startswith("#")
                    for ln in f.read_text().splitlines())]


@pytest.fixture(scope="session")
def deb() -> Path:
    out = _run([str(REPO / "scripts" / "package.sh")], timeout=3600).stdout.strip()
    path = Path(out.splitlines()[-1])
    assert path.name == f"faasd_{_project_version()}_amd64.deb"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def debian_base(request) -> Path:
    """mmdebstrap's tarball of a minimal Debian 12, keyed by its command and sources."""
    sources = _apt_sources()
    assert sources, "no apt sources on this machine"
    argv = ["mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", SUITE]
    key = hashlib.sha256("\0".join(argv).encode()
                         + b"".join(f.read_bytes() for f in sources)).hexdigest()[:16]
    cache = Path(request.config.getoption("--image-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"debian12-minbase-{key}.tar"
    # A lock of its own: the handler images' one is not held while mmdebstrap runs.
    with open(cache / ".debian-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tar.exists():
            part = tar.with_suffix(".part")
            part.unlink(missing_ok=True)
            _run(argv + [str(part)] + [str(f) for f in sources], timeout=1800)
            os.rename(part, tar)
    return tar


@pytest.fixture
def debian_root(debian_base, tmp_path):
    """A fresh Debian 12 root from the cached tarball, removed after the test."""
    root = tmp_path / "root"
    root.mkdir()
    try:
        _run(["tar", "--numeric-owner", "-xf", str(debian_base), "-C", str(root)])
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        yield root
    finally:
        shutil.rmtree(root)


def in_root(root: Path, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs `script` with sh in `root`, with its own /proc in a mount and pid namespace
    that end with it (nothing stays mounted)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C.UTF-8", "HOME": "/root"}
    return _run(["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root}/proc",
                 "chroot", str(root), "sh", "-euc", script], env=env, timeout=timeout)


def _deb_paths(deb: Path) -> set:
    listing = _run(["dpkg-deb", "-c", str(deb)]).stdout
    # "-rw-r--r-- root/root 1234 2026-01-01 00:00 ./usr/bin/faas": the last field.
    return {line.split()[-1].removeprefix(".") for line in listing.splitlines()}


def _expected_files() -> set:
    docs = {f"/usr/share/doc/faasd/docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    return {"/usr/bin/faasd", "/usr/bin/faas", "/lib/systemd/system/faasd.service",
            "/usr/share/doc/faasd/README.md"} | docs


def test_package_lists_programs_unit_and_docs(deb):
    paths = _deb_paths(deb)
    missing = _expected_files() - paths
    assert not missing, f"not in {deb.name}: {sorted(missing)}"


def test_package_fields_name_the_runtime_and_libraries(deb):
    fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture",
                   "Depends", "Suggests"]).stdout
    assert "Package: faasd\n" in fields
    assert f"Version: {_project_version()}\n" in fields
    assert "Architecture: amd64\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    names = {d.split()[0] for d in depends.split(", ")}
    # runc is started as a program; the others are the libraries faasd and faas link.
    for name in ("runc", "libarchive13", "libcurl4", "libmnl0", "libssl3", "libc6"):
        assert name in names, f"Depends lacks {name}: {depends}"
    assert "crun" in re.search(r"^Suggests: (.*)$", fields, re.M).group(1)


def test_cmake_install_puts_files_in_place(deb, tmp_path):
    dest = tmp_path / "dest"
    _run(["cmake", "--install", str(deb.parent)], env={**os.environ, "DESTDIR": str(dest)})
    installed = {"/" + str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir()}
    missing = _expected_files() - installed
    assert not missing, f"cmake --install did not install {sorted(missing)}"
    assert (dest / "usr/share/doc/faasd/README.md").read_bytes() == \
        (REPO / "README.md").read_bytes()
    unit = (dest / "lib/systemd/system/faasd.service").read_text()
    assert "ExecStart=/usr/bin/faasd" in unit
    for program in ("faasd", "faas"):
        assert os.access(dest / "usr/bin" / program, os.X_OK)


def test_apt_installs_package_into_clean_debian(deb, debian_root):
    shutil.copy(deb, debian_root / "tmp" / deb.name)
    in_root(debian_root, f"apt-get update -q && apt-get install -y -q --no-install-recommends "
                         f"./tmp/{deb.name}", timeout=1800)
    status = in_root(debian_root, "dpkg-query -W -f '${Package} ${Status}\\n' faasd runc")
    assert status.stdout.splitlines() == ["faasd install ok installed",
                                          "runc install ok installed"]

    version = in_root(debian_root, "/usr/bin/faasd --version").stdout
    assert version.strip() == f"faasd {_project_version()}"

    # faas init carries the SDK in the binary: what it writes is sdk/ byte for byte.
    script = "mkdir /tmp/projects && cd /tmp/projects && " + " && ".join(
        f"/usr/bin/faas init --lang {lang} hello-{lang}" for lang in LANGS)
    in_root(debian_root, script)
    projects = debian_root / "tmp" / "projects"
    for lang in LANGS:
        project = projects / f"hello-{lang}"
        assert (project / "Dockerfile").is_file(), f"{lang}: no Dockerfile"
        assert os.access(project / "build.sh", os.X_OK), f"{lang}: build.sh not executable"
        written = sorted((project / "faas-sdk").iterdir())
        assert written, f"{lang}: no SDK files in faas-sdk/"
        for f in written:
            [source] = [p for p in (REPO / "sdk").rglob(f.name) if p.is_file()]
            assert f.read_bytes() == source.read_bytes(), f"{lang}: {f.name} differs from {source}"
