"""Handler images for the tests, and hand-crafted (hostile) image archives.

ImageBuilder builds the handlers in tests/handlers/<name>/ with podman on the test
host and caches the archives in /tmp/faasd-test-images (FAASD_TEST_IMAGE_CACHE),
keyed by a hash of the handler's sources (plus tests/handlers/common/ and this
builder's version), so an unchanged handler is never rebuilt:

    <cache>/<name>-<hash>.docker-archive.tar   podman save (default format)
    <cache>/<name>-<hash>.oci-archive.tar      podman save --format oci-archive
    <cache>/<name>-<hash>.bin                  the static binary (C handlers)
    <cache>/python-base-<hash>.tar             mmdebstrap minbase + python3-minimal
                                               (without /dev nodes: --skip=output/dev)

import_tree() makes an image the way one is made without a registry or a Dockerfile:
`tar` of a directory tree (device nodes included), then `podman import` and `podman save`.

C handlers: every *.c of the directory is compiled with `gcc -static` into a binary
named after the directory, then its Dockerfile (FROM scratch, COPY <name> /handler)
is built with `podman build --isolation chroot`. The Python handler (python-hello)
is built FROM a base imported from an mmdebstrap tarball (no registry access).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

BUILDER_VERSION = "3"
HANDLERS_DIR = Path(__file__).resolve().parents[1] / "handlers"
DEFAULT_CACHE = Path(os.environ.get("FAASD_TEST_IMAGE_CACHE", "/tmp/faasd-test-images"))

PYTHON_BASE_TAG = "localhost/faas-python-base:bookworm"
PYTHON_BASE_PACKAGES = ["python3-minimal"]
PYTHON_BASE_SUITE = "bookworm"
# Handlers whose Dockerfile needs the Python base.
PYTHON_HANDLERS = {"python-hello"}
FORMATS = ("docker-archive", "oci-archive")


class ImageBuildError(RuntimeError):
    pass


def _run(argv: list, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, **kw)
    if p.returncode != 0:
        raise ImageBuildError(f"{' '.join(map(str, argv))} exited {p.returncode}:\n"
                              f"{p.stdout.decode(errors='replace')[-3000:]}\n"
                              f"{p.stderr.decode(errors='replace')[-3000:]}")
    return p


def _hash_tree(h, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")


class ImageBuilder:
    def __init__(self, cache_dir: Path = DEFAULT_CACHE, handlers_dir: Path = HANDLERS_DIR):
        self.cache = Path(cache_dir)
        self.handlers = Path(handlers_dir)
        self.cache.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _lock(self):
        with open(self.cache / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def names(self) -> list:
        return sorted(p.name for p in self.handlers.iterdir()
                      if p.is_dir() and (p / "Dockerfile").exists())

    def source_hash(self, name: str) -> str:
        src = self.handlers / name
        if not (src / "Dockerfile").exists():
            raise ImageBuildError(f"no handler {name!r} in {self.handlers}")
        h = hashlib.sha256(f"builder {BUILDER_VERSION}\0{name}\0".encode())
        _hash_tree(h, src)
        _hash_tree(h, self.handlers / "common")
        if name in PYTHON_HANDLERS:
            h.update(self.python_base_key().encode())
        return h.hexdigest()[:16]

    def tag(self, name: str) -> str:
        return f"localhost/faas-test-{name}:{self.source_hash(name)}"

    def archive(self, name: str, fmt: str = "docker-archive") -> Path:
        """The image archive of handler `name` in format `fmt`, built if not cached."""
        if fmt not in FORMATS:
            raise ImageBuildError(f"unknown format {fmt!r}")
        digest = self.source_hash(name)
        out = self.cache / f"{name}-{digest}.{fmt}.tar"
        if out.exists():
            return out
        with self._lock():
            if out.exists():
                return out
            tag = f"localhost/faas-test-{name}:{digest}"
            binary = self.cache / f"{name}-{digest}.bin"
            has_c = any((self.handlers / name).glob("*.c"))
            if (subprocess.run(["podman", "image", "exists", tag]).returncode != 0
                    or (has_c and not binary.exists())):
                self._build(name, digest, tag)
            tmp = out.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            _run(["podman", "save", "-q", "--format", fmt, "-o", str(tmp), tag])
            os.rename(tmp, out)
        return out

    def binary(self, name: str) -> Path:
        """The static binary of C handler `name` as copied into its image."""
        digest = self.source_hash(name)
        path = self.cache / f"{name}-{digest}.bin"
        if not path.exists():
            self.archive(name)
        if not path.exists():
            # The archive was cached but the binary is gone: rebuild both.
            with self._lock():
                self._build(name, digest, self.tag(name))
                for fmt in FORMATS:
                    (self.cache / f"{name}-{digest}.{fmt}.tar").unlink(missing_ok=True)
        return path

    def _build(self, name: str, digest: str, tag: str) -> None:
        src = self.handlers / name
        build_args = []
        with tempfile.TemporaryDirectory(prefix=f"faasd-img-{name}-") as ctx:
            for f in src.iterdir():
                if f.is_file() and f.suffix != ".c":
                    shutil.copy(f, ctx)
            sources = sorted(str(f) for f in src.glob("*.c"))
            if sources:
                binary = Path(ctx) / name
                _run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
                      "-I", str(self.handlers / "common"), "-o", str(binary)] + sources)
                shutil.copy(binary, self.cache / f"{name}-{digest}.bin")
            if name in PYTHON_HANDLERS:
                self._ensure_python_base()
                build_args = ["--build-arg", f"BASE={PYTHON_BASE_TAG}"]
            _run(["podman", "build", "-q", "--isolation", "chroot", "-t", tag] + build_args + [ctx])
        # Drop older builds of the same handler so podman's store does not grow.
        repo = tag.rsplit(":", 1)[0]
        listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                                capture_output=True, text=True).stdout.split()
        stale = [t for t in listed if t != tag and t.startswith(repo + ":")]
        if stale:
            subprocess.run(["podman", "rmi", "-f"] + stale, capture_output=True)

    # --- the Python base ------------------------------------------------------------
    def python_base_key(self) -> str:
        spec = json.dumps({"suite": PYTHON_BASE_SUITE, "variant": "minbase",
                           "include": sorted(PYTHON_BASE_PACKAGES), "skip": ["output/dev"]},
                          sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def python_base_tar(self) -> Path:
        """mmdebstrap --variant=minbase --include=python3-minimal bookworm, cached.
        --skip=output/dev: a container gets its devices from the runtime, and faasd
        would only skip the /dev/console, /dev/null, ... of mmdebstrap's tarball
        (tests/integration/test_device_nodes.py deploys an image that has them)."""
        out = self.cache / f"python-base-{self.python_base_key()}.tar"
        if out.exists():
            return out
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError("mmdebstrap is not installed (apt-get install -y mmdebstrap; "
                                  "scripts/install-deps.sh should install it)")
        tmp = out.with_name(out.name + ".tmp.tar")
        tmp.unlink(missing_ok=True)
        _run(["mmdebstrap", "--quiet", "--variant=minbase", "--skip=output/dev",
              "--include=" + ",".join(PYTHON_BASE_PACKAGES), PYTHON_BASE_SUITE, str(tmp)],
             timeout=1800)
        os.rename(tmp, out)
        return out

    def _ensure_python_base(self) -> None:
        tar = self.python_base_tar()
        # Always (re)import when building: the tag may hold an older tarball.
        _run(["podman", "import", "-q", str(tar), PYTHON_BASE_TAG])


def import_tree(tree: Path, out: Path, cmd: list) -> Path:
    """`tar` of the directory `tree` as it is (numeric owners, device nodes and hard
    links kept), `podman import` of it with CMD `cmd`, then `podman save` into `out`
    (docker-archive). The image is removed from podman's store afterwards."""
    tag = f"localhost/faas-test-import:{hashlib.sha256(str(out).encode()).hexdigest()[:12]}"
    with tempfile.TemporaryDirectory(prefix="faasd-import-") as tmp:
        tarball = Path(tmp) / "tree.tar"
        _run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(tarball), "."])
        _run(["podman", "import", "-q", "--change", "CMD=" + json.dumps(cmd), str(tarball), tag])
    try:
        _run(["podman", "save", "-q", "-o", str(out), tag])
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    return out


# --- hand-crafted archives -------------------------------------------------------------

def tar_entry(name: str, kind: str = "file", data: bytes = b"", target: str = "",
              mode: Optional[int] = None) -> dict:
    """One member of a crafted tar: kind is file, dir, symlink or hardlink."""
    return {"name": name, "kind": kind, "data": data, "target": target, "mode": mode}


def make_tar(entries: Iterable[dict]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])  # written as given: no sanitising on write
            info.mtime = 1700000000
            if e["kind"] == "file":
                info.type = tarfile.REGTYPE
                info.size = len(e["data"])
                info.mode = e["mode"] if e["mode"] is not None else 0o755
                tar.addfile(info, io.BytesIO(e["data"]))
                continue
            if e["kind"] == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = e["mode"] if e["mode"] is not None else 0o755
            elif e["kind"] == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e["target"]
                info.mode = 0o777
            elif e["kind"] == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e["target"]
                info.mode = 0o644
            else:
                raise ValueError(e["kind"])
            tar.addfile(info)
    return buf.getvalue()


def make_docker_archive(layers: list, cmd: Optional[list] = None,
                        extra_members: Iterable[dict] = (),
                        run_config: Optional[dict] = None, user: str = "") -> bytes:
    """A docker-archive (as `docker save` writes it) with the given layers, each a list
    of tar_entry()s; diff_ids are correct, so only the layer contents are hostile.
    `extra_members` are added to the outer tar as they are. `run_config` keys (Env,
    WorkingDir, User, ...) replace or join those of the image config's "config"; `user`
    is the config's User (empty: root)."""
    cmd = cmd if cmd is not None else ["/handler"]
    layer_blobs = [make_tar(layer) for layer in layers]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in layer_blobs]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/bin:/bin"], **({"User": user} if user else {}),
                   **(run_config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    members = []
    layer_paths = []
    for blob, diff_id in zip(layer_blobs, diff_ids):
        path = diff_id.split(":")[1] + "/layer.tar"
        layer_paths.append(path)
        members.append(tar_entry(diff_id.split(":")[1], "dir"))
        members.append(tar_entry(path, data=blob, mode=0o644))
    members.append(tar_entry(config_name, data=config, mode=0o644))
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["localhost/crafted:latest"],
                            "Layers": layer_paths}]).encode()
    members.append(tar_entry("manifest.json", data=manifest, mode=0o644))
    members.extend(extra_members)
    return make_tar(members)
