"""Boots the vmtest guest (tests/lib/qemu_vm.py: cgroup v2, the host's / read-only)
and runs bench/runtimes.sh in it: runc and crun side by side, where both work.

    vm_runtimes.py IMAGES BIN_DIR BENCH_BIN RESULTS

Everything runs inside the guest, which has its own network stack; the guest sees the
host's files as of its boot, so the inputs must exist before this starts. The guest's
vm-*.json land in RESULTS. The guest is stopped on every exit path.
"""

import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lib.qemu_vm import Machine, check_host  # noqa: E402  (the path is set first)

TIMEOUT_S = 1800  # the whole guest run; runtimes.sh bounds each of its loops too


def main(argv: list) -> int:
    if len(argv) != 5:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    images, bin_dir, bench_bin, results = (str(Path(a).resolve()) for a in argv[1:])
    problems = check_host()
    if problems:
        print("vm_runtimes: cannot boot the guest: " + "; ".join(problems), file=sys.stderr)
        return 1
    machine = Machine()
    t0 = time.monotonic()
    machine.boot()
    try:
        print(f"vm_runtimes: guest up in {time.monotonic() - t0:.1f} s ({machine.accel})",
              file=sys.stderr)
        guest_results = "/mnt/xfer/runtimes"
        # The guest's commands get a fixed environment: pass the block sizes on.
        env = {k: v for k, v in os.environ.items() if k.startswith("BENCH_VM_")}
        reply = machine.request(
            "run", wait=TIMEOUT_S + machine.grace, timeout=TIMEOUT_S, env=env,
            cmd=["/bin/bash", str(REPO / "bench/runtimes.sh"), images, bin_dir, bench_bin,
                 guest_results])
        sys.stderr.write(_text(reply["stderr"]))
        out = Path(results)
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted((machine.xfer / "runtimes").glob("vm-*")):
            shutil.copyfile(f, out / f.name)
        (out / "vm-machine.json").write_text(json.dumps(
            {"accel": machine.accel, "memory_mb": machine.memory_mb}) + "\n")
        if reply.get("timed_out") or reply["rc"] != 0:
            print(f"vm_runtimes: runtimes.sh failed (rc {reply['rc']}, timed out: "
                  f"{bool(reply.get('timed_out'))})", file=sys.stderr)
            return 1
        return 0
    finally:
        machine.shutdown()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode(errors="replace")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
