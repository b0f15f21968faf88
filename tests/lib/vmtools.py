#!/usr/bin/python3
"""Inspection commands run INSIDE the VM (stdlib only), printing JSON:

    vmtools.py procs                  every process: pid, ppid, comm, cmdline, cgroup, netns
    vmtools.py fds PID                the open fds of PID: {"count", "targets": {fd: target}}
    vmtools.py stat PATH...           {path: {"ino","dev","mtime_ns","mode","size"} or null}
    vmtools.py tree PATH              every path below PATH (relative), sorted
    vmtools.py stat-tree PATH         stat of PATH and of every path below it
"""

import json
import os
import sys


def read(path, default=""):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return default


def procs():
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        base = f"/proc/{entry}"
        stat = read(base + "/stat")
        if not stat:
            continue
        # comm may contain spaces and parens: split on the last ')'.
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            netns = os.readlink(base + "/ns/net")
        except OSError:
            netns = ""
        out.append({
            "pid": int(entry),
            "ppid": int(fields[1]),
            "state": fields[0],
            "comm": comm,
            "cmdline": read(base + "/cmdline").split("\0")[:-1],
            "cgroup": read(base + "/cgroup"),
            "netns": netns,
        })
    return out


def fds(pid):
    base = f"/proc/{pid}/fd"
    targets = {}
    for fd in os.listdir(base):
        try:
            targets[fd] = os.readlink(f"{base}/{fd}")
        except OSError:
            pass
    return {"count": len(targets), "targets": targets}


def stat(paths):
    out = {}
    for p in paths:
        try:
            st = os.stat(p, follow_symlinks=False)
            out[p] = {"ino": st.st_ino, "dev": st.st_dev, "mtime_ns": st.st_mtime_ns,
                      "mode": st.st_mode, "size": st.st_size}
        except OSError:
            out[p] = None
    return out


def tree(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(found)


def main(argv):
    cmd = argv[1]
    if cmd == "procs":
        result = procs()
    elif cmd == "fds":
        result = fds(int(argv[2]))
    elif cmd == "stat":
        result = stat(argv[2:])
    elif cmd == "tree":
        result = tree(argv[2])
    elif cmd == "stat-tree":
        root = argv[2]
        result = stat([root] + [os.path.join(root, p) for p in tree(root)])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
