"""The memory of a function's pooled containers: PSS of each `runc run` and its handler.

    pool_memory.py STATE NAME

STATE is faasd's state dir. A pooled container of NAME is a bundle under
STATE/bundles/ whose config.json has its root in STATE/images/NAME/; its `runc run`
process is the one started with that bundle, and the handler is what runs under it
(all its descendants, counted together). PSS (proportional set size, from
/proc/PID/smaps_rollup) splits each shared page among the processes mapping it, so the
containers' figures add up to what they take together. Prints JSON, sizes in kB.
"""

import json
import os
import sys
from pathlib import Path


def rollup(pid: int) -> dict:
    """Pss and Rss (kB) of pid from /proc/PID/smaps_rollup."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                values[key.lower() + "_kb"] = int(rest.split()[0])
    return values


def processes() -> dict:
    """pid -> (ppid, argv) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        table[int(entry)] = (ppid, argv)
    return table


def descendants(pid: int, table: dict) -> list:
    children = {}
    for child, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:  # each pid once, so this ends even on a table read while pids were reused
        p = todo.pop()
        if p in found or p == pid:
            continue
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def sum_rollup(pids: list) -> dict:
    total = {"pss_kb": 0, "rss_kb": 0}
    for pid in pids:
        for key, value in rollup(pid).items():
            total[key] += value
    return total


def main(argv: list) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    state, name = Path(argv[1]).resolve(), argv[2]
    images = (state / "images" / name).resolve()
    bundles = []
    for config in sorted(state.glob("bundles/*/config.json")):
        try:
            root = Path(json.loads(config.read_text())["root"]["path"])
        except (OSError, ValueError, KeyError):
            continue  # a bundle being written or removed
        if not root.is_absolute():
            root = config.parent / root
        if root.resolve().parent == images:
            bundles.append(config.parent)
    table = processes()
    containers = []
    for bundle in bundles:
        runc = [pid for pid, (_, args) in table.items()
                if "run" in args and "--bundle" in args and args[-1] == bundle.name
                and Path(args[args.index("--bundle") + 1]).resolve() == bundle.resolve()]
        if len(runc) != 1:
            print(f"pool_memory: {len(runc)} runc run processes for bundle {bundle}",
                  file=sys.stderr)
            return 1
        handler = descendants(runc[0], table)
        if not handler:
            print(f"pool_memory: no handler under runc (pid {runc[0]}) of {bundle}",
                  file=sys.stderr)
            return 1
        containers.append({"id": bundle.name, "runc_pid": runc[0], "handler_pids": handler,
                           "runc": rollup(runc[0]), "handler": sum_rollup(handler)})
    if not containers:
        print(f"pool_memory: no pooled container of {name} under {state}/bundles",
              file=sys.stderr)
        return 1
    json.dump({"function": name, "containers": containers}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
