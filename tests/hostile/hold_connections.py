#!/usr/bin/python3
"""Runs inside the VM: opens connections and holds them, as a hostile client would.

    hold_connections.py --send G --until /tmp/stop 10.0.0.10:80x40 10.0.0.11:80x40

opens 40 connections to each target (TARGET:PORTxCOUNT), sends the --send bytes on
each (nothing by default), prints "held" once all are open, then keeps them until the
file --until exists or --max-seconds passed, and closes them. Prints one JSON line:
{"opened", "failed", "closed_by_peer", "closed_after" (seconds, each connection the
peer closed while held)}.
"""

import argparse
import json
import os
import select
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("targets", nargs="+")
    ap.add_argument("--send", default="")
    ap.add_argument("--until", default=None)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()
    socks, failed = [], 0
    start = time.monotonic()
    for target in args.targets:
        addr, count = target.rsplit("x", 1)
        host, port = addr.rsplit(":", 1)
        for _ in range(int(count)):
            try:
                s = socket.create_connection((host, int(port)), timeout=5)
                if args.send:
                    s.sendall(args.send.encode())
                socks.append(s)
            except OSError:
                failed += 1
    print("held", flush=True)
    open_socks = {s.fileno(): s for s in socks}
    closed_after = []
    deadline = start + args.max_seconds
    while open_socks and time.monotonic() < deadline:
        if args.until and os.path.exists(args.until):
            break
        readable, _, _ = select.select(list(open_socks), [], [], 0.05)
        for fd in readable:
            try:
                data = open_socks[fd].recv(65536)
            except OSError:
                data = b""
            if not data:
                closed_after.append(round(time.monotonic() - start, 2))
                open_socks.pop(fd).close()
    for s in open_socks.values():
        s.close()
    print(json.dumps({"opened": len(socks), "failed": failed,
                      "closed_by_peer": len(closed_after), "closed_after": closed_after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
