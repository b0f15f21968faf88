#!/usr/bin/env python3
"""Writes binary seed inputs for the layer and import fuzzers (tars built with
the standard library, so the repository holds no binary blobs)."""
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def add(tar, name, data=b"", kind=tarfile.REGTYPE, link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            add(tar, *entry)
    return buf.getvalue()


def docker_archive(layers, cmd):
    config = {"config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers",
                         "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]}}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    names = [f"{i}/layer.tar" for i in range(len(layers))]
    manifest = json.dumps([{"Config": config_name, "Layers": names}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in zip(names, layers):
            add(tar, name, data)
        add(tar, config_name, config_bytes)
        add(tar, "manifest.json", manifest)
    return buf.getvalue()


def main(out):
    base = layer([("bin", b"", tarfile.DIRTYPE, "", 0o755),
                  ("bin/handler", b"\x7fELF" + b"\0" * 60, tarfile.REGTYPE, "", 0o755),
                  ("etc", b"", tarfile.DIRTYPE, "", 0o755),
                  ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                  ("sbin", b"", tarfile.SYMTYPE, "bin"),
                  ("bin/hard", b"", tarfile.LNKTYPE, "bin/handler")])
    top = layer([("etc/.wh.passwd", b""), ("bin/.wh..wh..opq", b""),
                 ("bin/new", b"#!/bin/sh\n", tarfile.REGTYPE, "", 0o4755)])
    # Device nodes are skipped, and hard links to them; one over a file removes it.
    devices = layer([("dev", b"", tarfile.DIRTYPE, "", 0o755),
                     ("dev/null", b"", tarfile.CHRTYPE, "", 0o666),
                     ("dev/sda", b"", tarfile.BLKTYPE, "", 0o660),
                     ("dev/null2", b"", tarfile.LNKTYPE, "dev/null"),
                     ("dev/tty", b"tty\n"),
                     ("dev/tty", b"", tarfile.CHRTYPE, "", 0o666)])
    seeds = {
        "layer": {"base.tar": base, "top.tar": top, "base.tar.gz": gzip.compress(base),
                  "devices.tar": devices},
        "import": {"image.tar": docker_archive([base, top], ["/bin/handler"]),
                   "devices.tar": docker_archive([base, devices], ["/bin/handler"]),
                   "image.tar.gz": gzip.compress(docker_archive([base], ["/bin/handler"]))},
    }
    for target, files in seeds.items():
        directory = Path(out) / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1])
