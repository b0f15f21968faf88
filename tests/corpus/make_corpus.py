#!/usr/bin/python3
"""Generates a corpus of malicious image archives for faasd's importer (stdlib only,
plus the `zstd` program for the zstd cases). Nothing binary is committed: every
archive is built here, byte by byte where tarfile would not write it.

    make_corpus.py OUTDIR --outside DIR [--handler BINARY] [--only NAME...]

writes OUTDIR/<case>.tar for every case and OUTDIR/cases.json:

    [{"name", "file", "format", "status", "messages", "what", "stage", "accepted",
      "contained", "skipped", "size"}]

`status` is what faasd must answer to `POST /api/new` with that archive (400 bad
image, 413 over a limit, 200 accepted) and `messages` substrings of its error (any
one). `stage` says which part of faasd refuses it (see Case). The
limits assume a faasd started with LIMITS (below): `--max-image-size 64 MiB
--max-rootfs-size 64 MiB --max-files 50000`.

DIR is a directory outside faasd's state dir that the hostile archives aim at (by
`../` paths, absolute paths, symlinks and hard links); the caller plants the victim
files of VICTIMS in it first and checks afterwards that they are untouched and that
nothing new appeared there. BINARY is the command (/handler) of the images: with a
real handler the accepted cases serve requests; by default a placeholder.

Accepted cases ("accepted": true) are hostile-looking but contained; the test checks
the rootfs they produce (`contained`: what must hold in it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, Optional

MIB = 1 << 20
LIMITS = {"max_image_size": 64 * MIB, "max_rootfs_size": 64 * MIB, "max_files": 50000}
LIMIT_ARGS = ["--max-image-size", str(LIMITS["max_image_size"]),
              "--max-rootfs-size", str(LIMITS["max_rootfs_size"]),
              "--max-files", str(LIMITS["max_files"])]
VICTIMS = {"victim": b"victim\n",
           "passwd": b"evil:x:4242:4242:planted outside the image:/:/bin/sh\n",
           "victim-exec": b"#!/bin/sh\necho escaped\n"}
PLACEHOLDER = b"#!/handler placeholder: never runs\n"
MTIME = 1700000000
ZERO_DIGEST = "sha256:" + "0" * 64  # a well-formed digest nothing has


# --- tar members ------------------------------------------------------------------------

def _info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)  # written as given: tarfile does not sanitise on write
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = MTIME
    return info


def F(name, data=b"", mode=0o644, uid=0, gid=0):
    info = _info(name, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(data)
    return info, data


def D(name, mode=0o755):
    return _info(name, tarfile.DIRTYPE, mode), None


def S(name, target):
    info = _info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return info, None


def H(name, target):
    info = _info(name, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return info, None


def DEV(name, kind, major, minor):
    info = _info(name, kind, 0o666)
    info.devmajor, info.devminor = major, minor
    return info, None


def FIFO(name, mode=0o600):
    return _info(name, tarfile.FIFOTYPE, mode), None


def tar(members, fmt=tarfile.GNU_FORMAT, end=True) -> bytes:
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=fmt)
    for info, data in members:
        t.addfile(info, io.BytesIO(data) if data is not None else None)
    if end:
        t.close()
        return buf.getvalue()
    # No end-of-archive blocks (the caller appends raw bytes).
    t.fileobj.flush()
    return buf.getvalue()


def pax_sparse_member(name: str, realsize: int, data: bytes, offset: int) -> bytes:
    """A PAX 1.0 GNU sparse file: `realsize` bytes of which only `data` at `offset` is
    stored (the map and the data follow the header; the rest is holes)."""
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.mtime = MTIME
    info.mode = 0o644
    sparse_map = f"1\n{offset}\n{len(data)}\n".encode()
    sparse_map += b"\0" * (-len(sparse_map) % 512)
    payload = sparse_map + data
    info.size = len(payload)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": name, "GNU.sparse.realsize": str(realsize)}
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    t.addfile(info, io.BytesIO(payload))
    t.fileobj.flush()
    return buf.getvalue()  # no end-of-archive blocks: the caller adds more or ends it


END_OF_ARCHIVE = b"\0" * 1024


# --- compression ----------------------------------------------------------------------

def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def zstd(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        raise RuntimeError("the zstd program is needed for the zstd cases (apt-get install zstd)")
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True,
                          check=True).stdout


def zero_bomb(compress: Callable[[bytes], bytes], prefix: bytes, zeros: int) -> bytes:
    """`prefix` then `zeros` zero bytes, as concatenated gzip members / zstd frames:
    one 1 MiB frame of zeros, compressed once and repeated (tiny, and quick to make)."""
    frame = compress(b"\0" * MIB)
    return compress(prefix) + frame * (zeros // MIB) + compress(b"\0" * (zeros % MIB))


def corrupt(blob: bytes) -> bytes:
    """Flips bytes in the middle of a compressed stream (its header stays valid)."""
    b = bytearray(blob)
    mid = len(b) // 2
    for i in range(mid, min(mid + 64, len(b))):
        b[i] ^= 0x5A
    return bytes(b)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- image archives ---------------------------------------------------------------------

class Layer:
    """A layer blob (possibly compressed) and its diff_id (digest of the tar)."""

    def __init__(self, members=None, compress=None, raw: Optional[bytes] = None,
                 diff_id: Optional[str] = None):
        plain = raw if raw is not None else tar(members)
        self.blob = compress(plain) if compress else plain
        self.diff_id = diff_id or sha256(plain)


def handler_layer(handler: bytes, *more) -> Layer:
    return Layer([F("handler", handler, 0o755), *more])


def config_json(layers, cmd=("/handler",), user="", extra=None) -> bytes:
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Cmd": list(cmd), "Env": ["PATH=/usr/bin:/bin"], "User": user},
           "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}
    if extra:
        cfg.update(extra)
    return json.dumps(cfg).encode()


def docker_archive(layers, config: Optional[bytes] = None, manifest=None, layer_paths=None,
                   config_name=None, extra=(), prefix=(), drop=(), end=True) -> bytes:
    """`docker save` layout: <id>/layer.tar, <config>.json, manifest.json. `manifest`
    replaces the manifest (an object, or bytes as they are), `extra` members go after,
    `prefix` members before, names in `drop` are left out. Without `end`, the archive
    stops after its last member (no end-of-archive blocks: the caller appends more)."""
    config = config if config is not None else config_json(layers)
    config_name = config_name or hashlib.sha256(config).hexdigest() + ".json"
    members = list(prefix)
    paths = []
    for i, layer in enumerate(layers):
        path = (layer_paths[i] if layer_paths
                else f"{hashlib.sha256(layer.blob).hexdigest()}/layer.tar")
        paths.append(path)
        if path not in drop:
            members.append(F(path, layer.blob))
    if config_name not in drop:
        members.append(F(config_name, config))
    if manifest is None:
        manifest = [{"Config": config_name, "RepoTags": ["localhost/hostile:latest"],
                     "Layers": paths}]
    if "manifest.json" not in drop:
        text = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        members.append(F("manifest.json", text))
    members.extend(extra)
    return tar(members, end=end)


def descriptor(media_type, blob, digest=None, size=None):
    return {"mediaType": media_type, "digest": digest or sha256(blob),
            "size": len(blob) if size is None else size}


def oci_archive(layers, config: Optional[bytes] = None, layer_descs=None, config_desc=None,
                store=None, index=None, manifest=None, extra=()) -> bytes:
    """`podman save --format oci-archive` layout: oci-layout, index.json, blobs/sha256/.
    Descriptors may be overridden (wrong digests, sizes); `store` maps a blob path to
    the bytes stored there (default: each blob under its true digest)."""
    config = config if config is not None else config_json(layers)
    config_desc = config_desc or descriptor("application/vnd.oci.image.config.v1+json", config)
    layer_descs = layer_descs or [descriptor("application/vnd.oci.image.layer.v1.tar", l.blob)
                                  for l in layers]
    if manifest is None:
        manifest = json.dumps({"schemaVersion": 2,
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config_desc, "layers": layer_descs}).encode()
    if index is None:
        index = json.dumps({"schemaVersion": 2, "manifests": [
            descriptor("application/vnd.oci.image.manifest.v1+json", manifest)]}).encode()
    blobs = {}
    if store is None:
        for blob in [config, manifest] + [l.blob for l in layers]:
            blobs["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    else:
        blobs = dict(store)
        blobs.setdefault("blobs/sha256/" + hashlib.sha256(manifest).hexdigest(), manifest)
    members = [F("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), F("index.json", index)]
    members += [F(path, blob) for path, blob in blobs.items()]
    members.extend(extra)
    return tar(members)


# --- the cases --------------------------------------------------------------------------

class Case:
    """`message`: what faasd's error must contain (a list: any one of them). `stage`:
    where faasd refuses it: "import" (the importer, so `faasd unpack` refuses it too)
    or "deploy" (the checks of the command and user that follow the import).
    `skipped`: for an accepted case, the "skipped" object of faasd's answer (none when
    nothing was skipped)."""

    def __init__(self, name, status, message, what, build, fmt="docker-archive",
                 contained=None, stage="import", skipped=None):
        self.name, self.status, self.what, self.build = name, status, what, build
        self.messages = message if isinstance(message, list) else [message]
        self.format, self.contained, self.stage = fmt, contained or {}, stage
        self.skipped = skipped


def cases(outside: str, handler: bytes) -> list:
    out = outside.rstrip("/")
    rel_out = "../" * 16 + out.lstrip("/")  # from STATE/images/NAME/.new-*/ past / to DIR
    h = handler
    hl = lambda *more: handler_layer(h, *more)  # noqa: E731

    def one(*members, compress=None):
        return docker_archive([Layer([F("handler", h, 0o755), *members], compress=compress)])

    def two(first, second):
        return docker_archive([Layer([F("handler", h, 0o755), *first]), Layer(list(second))])

    def deep_json(depth):
        return ("[" * depth + "]" * depth).encode()

    def nested_index(depth):
        """index.json -> index -> ... -> a manifest, `depth` indexes deep."""
        layers = [hl()]
        config = config_json(layers)
        manifest = json.dumps({"schemaVersion": 2, "config": descriptor(
            "application/vnd.oci.image.config.v1+json", config), "layers": [descriptor(
                "application/vnd.oci.image.layer.v1.tar", layers[0].blob)]}).encode()
        store = {"blobs/sha256/" + hashlib.sha256(b).hexdigest(): b
                 for b in (config, manifest, layers[0].blob)}
        child = manifest
        child_type = "application/vnd.oci.image.manifest.v1+json"
        for _ in range(depth):
            idx = json.dumps({"schemaVersion": 2,
                              "mediaType": "application/vnd.oci.image.index.v1+json",
                              "manifests": [descriptor(child_type, child)]}).encode()
            store["blobs/sha256/" + hashlib.sha256(idx).hexdigest()] = idx
            child, child_type = idx, "application/vnd.oci.image.index.v1+json"
        index = json.dumps({"schemaVersion": 2, "manifests": [descriptor(child_type, child)]})
        return oci_archive(layers, config=config, manifest=manifest, store=store,
                           index=index.encode())

    def many_files(n):
        buf = io.BytesIO()
        t = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)
        info, data = F("handler", h, 0o755)
        t.addfile(info, io.BytesIO(data))
        for i in range(n):
            info = _info(f"f/{i // 1000}/{i}", tarfile.REGTYPE, 0o644)
            t.addfile(info, io.BytesIO(b""))
        t.close()
        return docker_archive([Layer(raw=buf.getvalue(), compress=gz)])

    def many_members(n):
        members = [S(f"link{i}", "manifest.json") for i in range(n)]
        return tar(members)

    def oci_wrong(field):
        layers = [hl()]
        config = config_json(layers)
        cdesc = descriptor("application/vnd.oci.image.config.v1+json", config)
        ldesc = descriptor("application/vnd.oci.image.layer.v1.tar", layers[0].blob)
        store = {"blobs/sha256/" + hashlib.sha256(b).hexdigest(): b
                 for b in (config, layers[0].blob)}
        if field == "layer-digest":
            # The blob stored under the name of the digest it claims, with other bytes.
            other = hl(F("extra", b"not what the digest says\n")).blob
            ldesc = descriptor(ldesc["mediaType"], other, digest=ldesc["digest"])
            store["blobs/sha256/" + ldesc["digest"].split(":")[1]] = other
        elif field == "config-digest":
            other = config_json(layers, cmd=["/evil"])
            store["blobs/sha256/" + cdesc["digest"].split(":")[1]] = other
            cdesc = dict(cdesc, size=len(other))
        elif field == "size":
            ldesc = dict(ldesc, size=ldesc["size"] + 1)
        elif field == "malformed":
            ldesc = dict(ldesc, digest="sha256:xyz")
        elif field == "algorithm":
            ldesc = dict(ldesc, digest="md5:" + hashlib.md5(layers[0].blob).hexdigest())
        elif field == "traversal":
            ldesc = dict(ldesc, digest="sha256:../../../../" + out.lstrip("/") + "/victim")
        return oci_archive(layers, config=config, config_desc=cdesc, layer_descs=[ldesc],
                           store=store)

    def config_wrong(cfg: bytes):
        layers = [hl()]
        return docker_archive(layers, config=cfg)

    def layer_with(blob: bytes, diff_id: str):
        return docker_archive([Layer(raw=blob, diff_id=diff_id)])

    plain_layer = tar([F("handler", h, 0o755)])
    tar_of_zero_file = tar([F("handler", h, 0o755)], end=False)
    huge = 1 << 30

    def zero_file_header(size):
        info = _info("zeros", tarfile.REGTYPE, 0o644)
        info.size = size
        return info.tobuf(tarfile.GNU_FORMAT)

    good_docker = docker_archive([hl()])
    open_docker = docker_archive([hl()], end=False)  # more members may follow
    good_layer_path = f"{hashlib.sha256(hl().blob).hexdigest()}/layer.tar"

    return [
        # --- paths in a layer -------------------------------------------------------------
        Case("layer-dotdot-file", 400, "path escapes the root",
             "a layer file at ../../…/DIR/pwned",
             lambda: one(F(f"{rel_out}/pwned", b"escaped\n"))),
        Case("layer-dotdot-shallow", 400, "path escapes the root",
             "a layer file at ../pwned (next to the rootfs, inside the state dir)",
             lambda: one(F("../pwned", b"escaped\n"))),
        Case("layer-dotdot-middle", 400, "path escapes the root",
             "a layer file at a/../../…/DIR/pwned",
             lambda: one(D("a"), F(f"a/../{rel_out}/pwned", b"escaped\n"))),
        Case("layer-dotdot-dir", 400, "path escapes the root",
             "a layer directory at ../../…/DIR/newdir",
             lambda: one(D(f"{rel_out}/newdir"))),
        Case("layer-absolute-file", 400, "absolute path not allowed",
             "a layer file at /DIR/pwned",
             lambda: one(F(f"{out}/pwned", b"escaped\n"))),
        # --- symlinks, then writes through them --------------------------------------------
        Case("symlink-absolute-write", 400, "path escapes the root",
             "evil -> /DIR, then evil/pwned",
             lambda: one(S("evil", out), F("evil/pwned", b"escaped\n"))),
        Case("symlink-relative-write", 400, "path escapes the root",
             "evil -> ../../…/DIR, then evil/pwned",
             lambda: one(S("evil", rel_out), F("evil/pwned", b"escaped\n"))),
        Case("symlink-next-layer-write", 400, "path escapes the root",
             "layer 1: evil -> /DIR; layer 2: evil/pwned",
             lambda: two([S("evil", out)], [F("evil/pwned", b"escaped\n")])),
        Case("symlink-chain-write", 400, "path escapes the root",
             "a -> b -> c -> ../../…/DIR, then a/pwned",
             lambda: one(S("a", "b"), S("b", "c"), S("c", rel_out), F("a/pwned", b"escaped\n"))),
        Case("symlink-loop-write", 400, "path escapes the root",
             "a -> b, b -> a, then a/pwned (ELOOP)",
             lambda: one(S("a", "b"), S("b", "a"), F("a/pwned", b"escaped\n"))),
        Case("symlink-long-chain-write", 400, "path escapes the root",
             "l0 -> l1 -> … -> l60 -> d/, then l0/pwned (more hops than the kernel follows)",
             lambda: one(D("d"), *[S(f"l{i}", f"l{i + 1}") for i in range(60)], S("l60", "d"),
                         F("l0/pwned", b"x\n"))),
        Case("symlink-replaces-dir-write", 400, "path escapes the root",
             "duplicate entry: d/ then d -> /DIR, then d/pwned",
             lambda: one(D("d"), S("d", out), F("d/pwned", b"escaped\n"))),
        Case("symlink-dir-mkdir-below", 400, "path escapes the root",
             "evil -> /DIR, then the directory evil/sub/",
             lambda: one(S("evil", out), D("evil/sub"))),
        Case("symlink-last-component-replaced", 200, "",
             "handler -> /DIR/victim, then a regular file handler: replaces the link, "
             "never writes through it",
             lambda: docker_archive([Layer([S("handler", f"{out}/victim"),
                                            F("handler", h, 0o755)])]),
             contained={"regular": ["handler"]}),
        # --- hard links ------------------------------------------------------------------
        Case("hardlink-dotdot", 400, "path escapes the root",
             "h hard-linked to ../../…/DIR/victim",
             lambda: one(H("h", f"{rel_out}/victim"))),
        Case("hardlink-absolute", 400, "absolute path not allowed",
             "h hard-linked to /DIR/victim",
             lambda: one(H("h", f"{out}/victim"))),
        Case("hardlink-through-symlink", 400, "path escapes the root",
             "l -> /DIR, then h hard-linked to l/victim",
             lambda: one(S("l", out), H("h", "l/victim"))),
        Case("hardlink-missing-target", 400, "hardlink target does not exist",
             "h hard-linked to a file the layer never had",
             lambda: one(H("h", "nope"))),
        # --- whiteouts -------------------------------------------------------------------
        Case("whiteout-dotdot", 400, "whiteout of '..'",
             "layer 2 has .wh... (would remove the directory above the rootfs)",
             lambda: two([], [F(".wh...")])),
        Case("whiteout-dotdot-nested", 400, "whiteout of '..'",
             "layer 2 has a/.wh...",
             lambda: two([D("a")], [F("a/.wh...")])),
        Case("whiteout-through-symlink", 400, "path escapes the root",
             "layer 1: l -> /DIR; layer 2: l/.wh.victim (would delete the victim)",
             lambda: two([S("l", out)], [F("l/.wh.victim")])),
        Case("opaque-through-symlink", 200, "",
             "layer 1: l -> /DIR; layer 2: l/.wh..wh..opq: a no-op on a link, DIR untouched",
             lambda: two([S("l", out)], [F("l/.wh..wh..opq")]),
             contained={"symlink": {"l": out}}),
        Case("opaque-below-symlink", 400, "path escapes the root",
             "layer 1: l -> /DIR; layer 2: l/sub/.wh..wh..opq",
             lambda: two([S("l", out)], [F("l/sub/.wh..wh..opq")])),
        # --- special files, modes, owners ------------------------------------------------
        Case("device-char", 200, "",
             "a character device (1,3: /dev/null) in a layer: skipped, counted",
             lambda: one(DEV("devnull", tarfile.CHRTYPE, 1, 3)),
             contained={"absent": ["devnull"]}, skipped={"devices": 1}),
        Case("device-block", 200, "",
             "a block device (8,0: the first disk) in a layer: skipped, counted",
             lambda: one(DEV("disk", tarfile.BLKTYPE, 8, 0)),
             contained={"absent": ["disk"]}, skipped={"devices": 1}),
        Case("device-hardlinks", 200, "",
             "a block device, a hard link to it in the same layer and one in the next: "
             "all skipped",
             lambda: two([DEV("disk", tarfile.BLKTYPE, 8, 0), H("disk2", "disk")],
                         [H("disk3", "disk2")]),
             contained={"absent": ["disk", "disk2", "disk3"]}, skipped={"devices": 3}),
        Case("device-over-file", 200, "",
             "layer 1: a file devmem; layer 2: a character device (1,1: /dev/mem) there",
             lambda: two([F("devmem", b"lower\n")], [DEV("devmem", tarfile.CHRTYPE, 1, 1)]),
             contained={"absent": ["devmem"]}, skipped={"devices": 1}),
        Case("device-through-symlink", 400, "path escapes the root",
             "l -> /DIR, then the character device l/victim (would remove the victim)",
             lambda: one(S("l", out), DEV("l/victim", tarfile.CHRTYPE, 1, 3))),
        Case("fifo", 200, "",
             "a FIFO in a layer: created as a FIFO inside the rootfs",
             lambda: one(FIFO("pipe", 0o644)),
             contained={"fifo": ["pipe"]}),
        Case("setuid-setgid", 200, "",
             "setuid/setgid files owned by root and by uid 1000: the bits are kept, inside "
             "the rootfs only (STATE is 0700; containers run with noNewPrivileges)",
             lambda: one(F("suid-root", h, 0o4755), F("sgid-root", h, 0o2755),
                         F("suid-user", h, 0o6755, uid=1000, gid=1000), D("sticky", 0o1777)),
             contained={"modes": {"suid-root": (0o104755, 0, 0), "sgid-root": (0o102755, 0, 0),
                                  "suid-user": (0o106755, 1000, 1000),
                                  "sticky": (0o41777, 0, 0)}}),
        Case("owner-out-of-range", 400, "owner out of range",
             "a file owned by uid 4294967295 ((uid_t)-1)",
             lambda: one(F("x", b"x", uid=0xFFFFFFFF))),
        Case("passwd-symlink-outside", 400, "is not in its /etc/passwd",
             "User evil, etc/passwd -> /DIR/passwd (which has evil): resolved inside the "
             "rootfs, not on the host",
             lambda: _with_user(h, out), stage="deploy"),
        Case("cmd-symlink-outside", 400, "is not an executable file in the image",
             "CMD /handler, handler -> /DIR/victim-exec (executable on the host)",
             lambda: docker_archive([Layer([S("handler", f"{out}/victim-exec")])]),
             stage="deploy"),
        Case("env-nul", 400, "it contains a NUL byte",
             "Env A=x<NUL>y: runc cannot exec with it, every request would fail",
             lambda: _with_run_config(h, {"Env": ["PATH=/usr/bin:/bin", "A=x\0y"]})),
        Case("env-newline-in-key", 400, "the key contains a control character",
             "Env A<LF>B=1", lambda: _with_run_config(h, {"Env": ["A\nB=1"]})),
        Case("workdir-file", 400, "is not a directory in the image",
             "WorkingDir /handler, a file", lambda: _with_run_config(h, {"WorkingDir": "/handler"}),
             stage="deploy"),
        Case("workdir-symlink-outside", 400, "leads out of the image",
             "WorkingDir /work/made, work -> /DIR: runc would create DIR/made on the host",
             lambda: _with_run_config(h, {"WorkingDir": "/work/made"}, S("work", out)),
             stage="deploy"),
        # --- the outer archive -------------------------------------------------------------
        Case("outer-dotdot-member", 400, "path escapes the archive",
             "an archive member at ../../…/DIR/pwned",
             lambda: docker_archive([hl()], extra=[F(f"{rel_out}/pwned", b"escaped\n")])),
        Case("outer-absolute-member", 400, "path escapes the archive",
             "an archive member at /DIR/pwned",
             lambda: docker_archive([hl()], extra=[F(f"{out}/pwned", b"escaped\n")])),
        Case("outer-hardlink-outside", 400, "path escapes the archive",
             "an archive member hard-linked to ../../…/DIR/victim",
             lambda: docker_archive([hl()], extra=[H("evil", f"{rel_out}/victim")])),
        Case("manifest-config-dotdot", 400, "path escapes the archive",
             "manifest.json: Config ../../…/DIR/victim",
             lambda: docker_archive([hl()], manifest=[{"Config": f"{rel_out}/victim",
                                                       "Layers": [good_layer_path]}])),
        Case("manifest-config-absolute", 400, "path escapes the archive",
             "manifest.json: Config /DIR/victim",
             lambda: docker_archive([hl()], manifest=[{"Config": f"{out}/victim",
                                                       "Layers": [good_layer_path]}])),
        Case("manifest-layer-dotdot", 400, "path escapes the archive",
             "manifest.json: a layer at ../../…/DIR/victim",
             lambda: docker_archive([hl()], manifest=[{"Config": "c.json",
                                                       "Layers": [f"{rel_out}/victim"]}],
                                    config_name="c.json")),
        Case("podman-layer-symlink-outside", 400, "link leads out of the archive",
             "the layer member is a symlink to ../../…/DIR/victim (podman links layers)",
             lambda: docker_archive([hl()], layer_paths=["l/layer.tar"], drop={"l/layer.tar"},
                                    prefix=[S("l/layer.tar", f"../{rel_out}/victim")])),
        Case("podman-layer-symlink-absolute", 400, "symlink leads out of the archive",
             "the layer member is a symlink to /DIR/victim",
             lambda: docker_archive([hl()], layer_paths=["l/layer.tar"], drop={"l/layer.tar"},
                                    prefix=[S("l/layer.tar", f"{out}/victim")])),
        Case("outer-symlink-loop", 400, "too many levels of links",
             "the layer member links to x, x links back to it",
             lambda: docker_archive([hl()], layer_paths=["l/layer.tar"], drop={"l/layer.tar"},
                                    prefix=[S("l/layer.tar", "../x"), S("x", "l/layer.tar")])),
        Case("outer-duplicate-layer", 400, "digest mismatch",
             "the layer member twice: the right bytes first, others second (the last wins)",
             lambda: docker_archive([hl()], layer_paths=["l/layer.tar"],
                                    extra=[F("l/layer.tar", hl(F("evil", b"x")).blob)])),
        Case("outer-duplicate-manifest", 400, "path escapes the archive",
             "manifest.json twice: a good one, then one with Config /DIR/victim",
             lambda: docker_archive([hl()], extra=[F("manifest.json", json.dumps(
                 [{"Config": f"{out}/victim", "Layers": [good_layer_path]}]).encode())])),
        Case("no-manifest", 400, "no manifest.json or index.json",
             "a layer and a config, but no manifest",
             lambda: docker_archive([hl()], drop={"manifest.json"})),
        # --- compression -----------------------------------------------------------------
        Case("gzip-truncated-layer", 400, "corrupt layer data",
             "a gzip layer cut in half",
             lambda: layer_with(gz(plain_layer)[:len(gz(plain_layer)) // 2], sha256(plain_layer))),
        # libarchive does not check gzip's CRC: the diff_id catches what inflates.
        Case("gzip-corrupt-layer", 400, ["corrupt layer data", "digest mismatch"],
             "a gzip layer with 64 bytes flipped in the middle",
             lambda: layer_with(corrupt(gz(plain_layer)), sha256(plain_layer))),
        Case("zstd-truncated-layer", 400, "corrupt layer data",
             "a zstd layer cut in half",
             lambda: layer_with(zstd(plain_layer)[:len(zstd(plain_layer)) // 2],
                                sha256(plain_layer))),
        Case("zstd-corrupt-layer", 400, ["corrupt layer data", "digest mismatch"],
             "a zstd layer with 64 bytes flipped in the middle",
             lambda: layer_with(corrupt(zstd(plain_layer)), sha256(plain_layer))),
        Case("gzip-truncated-outer", 400, "not a valid image archive",
             "the whole archive gzip-compressed, cut in half",
             lambda: gz(good_docker)[:len(gz(good_docker)) // 2]),
        Case("zstd-corrupt-outer", 400, "not a valid image archive",
             "the whole archive zstd-compressed, bytes flipped",
             lambda: corrupt(zstd(good_docker))),
        Case("tar-truncated-outer", 400, "not a valid image archive",
             "the archive cut in the middle of the layer member",
             lambda: good_docker[:len(good_docker) // 2]),
        # --- bombs and limits ------------------------------------------------------------
        Case("gzip-bomb-layer", 413, "decompressed layers exceed the size limit",
             "a 1.4 MB gzip layer: a small tar, then 1 GiB of zeros after its end",
             lambda: layer_with(zero_bomb(gz, tar_of_zero_file, huge), ZERO_DIGEST)),
        Case("zstd-bomb-layer", 413, "decompressed layers exceed the size limit",
             "a 0.4 MB zstd layer: a small tar, then 1 GiB of zeros after its end",
             lambda: layer_with(zero_bomb(zstd, tar_of_zero_file, huge), ZERO_DIGEST)),
        Case("gzip-bomb-file", 413, "unpacked files exceed",
             "a gzip layer holding one 1 GiB file of zeros",
             lambda: layer_with(zero_bomb(gz, tar_of_zero_file + zero_file_header(huge), huge),
                                ZERO_DIGEST)),
        Case("gzip-bomb-outer", 413, "decompressed image archive larger than",
             "the whole archive gzip-compressed, with a 1 GiB member of zeros",
             lambda: zero_bomb(gz, open_docker + zero_file_header(huge), huge)),
        Case("sparse-layer-file", 413, "unpacked files exceed",
             "a 1 TiB sparse file (512 bytes of data) in a layer",
             lambda: layer_with(tar_of_zero_file + pax_sparse_member("sparse", 1 << 40, b"x" * 512,
                                                                     (1 << 40) - 512)
                                + END_OF_ARCHIVE, ZERO_DIGEST)),
        Case("sparse-outer-member", 413, "decompressed image archive larger than",
             "a 1 TiB sparse member of the archive itself",
             lambda: open_docker + pax_sparse_member("sparse", 1 << 40, b"x" * 512,
                                                             (1 << 40) - 512) + END_OF_ARCHIVE),
        Case("many-files", 413, "more than 50000 entries in the image",
             "100,000 empty files in one gzip layer",
             lambda: many_files(100000)),
        Case("many-members", 413, "more than 100000 members",
             "100,001 members in the archive itself",
             lambda: many_members(100001)),
        Case("huge-json", 400, "JSON document larger than",
             "a 17 MiB manifest.json",
             lambda: docker_archive([hl()], manifest=b" " * (17 * MIB) + json.dumps(
                 [{"Config": "c.json", "Layers": [good_layer_path]}]).encode(),
                 config_name="c.json")),
        # --- JSON ------------------------------------------------------------------------
        Case("manifest-not-json", 400, "manifest.json: invalid JSON",
             "manifest.json is not JSON",
             lambda: docker_archive([hl()], manifest=b"[{\"Config\": ")),
        Case("manifest-wrong-types", 400, "manifest.json: Config: expected a string",
             "manifest.json: Config is a number",
             lambda: docker_archive([hl()], manifest=[{"Config": 5, "Layers": "x"}])),
        Case("manifest-deep-json", 400, "JSON nested too deeply",
             "manifest.json nested 100,000 levels deep",
             lambda: docker_archive([hl()], manifest=deep_json(100000))),
        Case("config-not-json", 400, "invalid JSON",
             "the image config is not JSON",
             lambda: config_wrong(b"{\"config\": {\"Cmd\": [")),
        Case("config-deep-json", 400, "JSON nested too deeply",
             "the image config nested 100,000 levels deep",
             lambda: config_wrong(deep_json(100000))),
        Case("config-diff-ids-mismatch", 400, "rootfs.diff_ids for 1 layers",
             "the config lists two diff_ids for one layer",
             lambda: config_wrong(json.dumps({"config": {"Cmd": ["/handler"]}, "rootfs": {
                 "type": "layers", "diff_ids": [hl().diff_id, ZERO_DIGEST]}}).encode())),
        Case("oci-index-too-deep", 400, "nested too deeply",
             "index.json -> 6 nested image indexes -> manifest", lambda: nested_index(6),
             fmt="oci-archive"),
        # --- digests ---------------------------------------------------------------------
        Case("docker-wrong-diff-id", 400, "digest mismatch",
             "the config's diff_id is not the layer's digest",
             lambda: layer_with(plain_layer, ZERO_DIGEST)),
        Case("oci-wrong-layer-digest", 400, "digest mismatch",
             "blobs/sha256/X holds bytes whose digest is not X", lambda: oci_wrong("layer-digest"),
             fmt="oci-archive"),
        Case("oci-wrong-config-digest", 400, "digest mismatch",
             "the config blob is not what its digest says", lambda: oci_wrong("config-digest"),
             fmt="oci-archive"),
        Case("oci-wrong-size", 400, "size mismatch",
             "a layer descriptor with a size one byte off", lambda: oci_wrong("size"),
             fmt="oci-archive"),
        Case("oci-malformed-digest", 400, "malformed digest",
             "a layer digest sha256:xyz", lambda: oci_wrong("malformed"), fmt="oci-archive"),
        Case("oci-digest-algorithm", 400, "unsupported digest",
             "a layer digest md5:…", lambda: oci_wrong("algorithm"), fmt="oci-archive"),
        Case("oci-digest-traversal", 400, "malformed digest",
             "a layer digest sha256:../../…/DIR/victim", lambda: oci_wrong("traversal"),
             fmt="oci-archive"),
    ]


def _with_user(handler: bytes, out: str) -> bytes:
    layers = [Layer([F("handler", handler, 0o755), D("etc"), S("etc/passwd", f"{out}/passwd")])]
    return docker_archive(layers, config=config_json(layers, user="evil"))


def _with_run_config(handler: bytes, run_config: dict, *more) -> bytes:
    layers = [Layer([F("handler", handler, 0o755), *more])]
    config = json.loads(config_json(layers))
    config["config"].update(run_config)
    return docker_archive(layers, config=json.dumps(config).encode())


def build(outdir: str, outside: str, handler: bytes = PLACEHOLDER, only=None) -> list:
    """Writes every case's archive and cases.json into outdir; returns the index."""
    os.makedirs(outdir, exist_ok=True)
    index = []
    for case in cases(outside, handler):
        if only and case.name not in only:
            continue
        data = case.build()
        path = os.path.join(outdir, case.name + ".tar")
        with open(path, "wb") as f:
            f.write(data)
        index.append({"name": case.name, "file": path, "format": case.format,
                      "status": case.status, "messages": case.messages, "what": case.what,
                      "stage": case.stage, "accepted": case.status == 200,
                      "contained": case.contained, "skipped": case.skipped,
                      "size": len(data)})
    with open(os.path.join(outdir, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--outside", required=True, help="the directory the archives aim at")
    p.add_argument("--handler", help="binary to use as /handler (default: a placeholder)")
    p.add_argument("--only", nargs="*", help="build only these cases")
    args = p.parse_args(argv)
    handler = Path(args.handler).read_bytes() if args.handler else PLACEHOLDER
    for c in build(args.outdir, args.outside, handler, args.only):
        print(f"{c['name']:32} {c['status']}  {c['size']:>10}  {c['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
