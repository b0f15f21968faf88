"""Writes the facts of this machine and of the benchmark's inputs as JSON.

    facts.py OUT IMAGE LAYER_LIST [BIN_DIR]

IMAGE is the big image archive, LAYER_LIST the file naming its layer tars; BIN_DIR,
when given, is where the measured faasd came from instead of this tree's build.
"""

import datetime
import json
import os
import platform
import subprocess
import sys


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()


def first_field(path: str, prefix: str) -> str:
    with open(path, encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith(prefix)), "")


def main(argv: list) -> int:
    if len(argv) not in (4, 5):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, image, layer_list = argv[1:4]
    with open(layer_list, encoding="utf-8") as f:
        layers = f.read().split()
    if len(argv) == 5 and argv[4]:
        faasd = f"the binaries in {argv[4]}"
    else:
        dirty = run("git", "status", "--porcelain", "--untracked-files=no")
        faasd = f"commit {run('git', 'rev-parse', '--short', 'HEAD')}"
        faasd += ", with local changes" if dirty else ""
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": int(run("nproc")),
        "cpu": first_field("/proc/cpuinfo", "model name"),
        "mem_gib": round(int(first_field("/proc/meminfo", "MemTotal").split()[0]) / 2**20, 1),
        "os": run("sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""),
        "kernel": platform.release(),
        "runc": run("runc", "--version").splitlines()[0],
        "faasd": faasd,
        "image_bytes": os.path.getsize(image),
        "layers": len(layers),
        "layer_bytes": sum(os.path.getsize(p) for p in layers),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
