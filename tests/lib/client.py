#!/usr/bin/python3
"""A small HTTP/1.1 load client that runs INSIDE the VM (stdlib only).

One TCP connection per request (`Connection: close`), read to EOF. Prints one JSON
document: {"results": [...], "sent_sha256": ..., "sent_len": ...}, where each result is

    {"i", "status", "reason", "headers" (lower-case names), "body" (text, when at most
     --keep-body bytes), "body_len", "body_sha256", "complete" (a status line, headers and
     exactly Content-Length body bytes were received), "raw_len", "error", "elapsed",
     "started"}

Examples:
    client.py 10.0.0.10                            one GET /
    client.py 10.0.0.10 -n 100 -c 1                100 sequential requests
    client.py 10.0.0.10 -n 20 -c 20                20 concurrent requests
    client.py 10.0.0.10 --body-size 1048576        POST a 1 MiB body
    client.py 10.0.0.10 -c 4 --until-file /tmp/x   repeat until /tmp/x exists
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time


def make_body(args):
    if args.body is not None:
        return args.body.encode()
    if args.body_size:
        pattern = bytes(range(256))
        reps = args.body_size // len(pattern) + 1
        return (pattern * reps)[:args.body_size]
    return b""


def parse_response(raw):
    """Returns (status, reason, headers, body, complete)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None, None, {}, b"", False
    head = raw[:end].decode("latin-1")
    body = raw[end + 4:]
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    status = None
    reason = ""
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    complete = status is not None and "content-length" in headers and \
        headers["content-length"].isdigit() and int(headers["content-length"]) == len(body)
    return status, reason, headers, body, complete


def one_request(i, args, payload, t0):
    started = time.monotonic()
    result = {"i": i, "status": None, "reason": None, "headers": {}, "body": None,
              "body_len": 0, "body_sha256": None, "complete": False, "raw_len": 0,
              "error": None, "elapsed": None, "started": round(started - t0, 4)}
    raw = bytearray()
    sock = None
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
        method = args.method or ("POST" if payload else "GET")
        head = f"{method} {args.path} HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\n"
        if payload or method in ("POST", "PUT"):
            head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n"
        head += "\r\n"
        try:
            sock.sendall(head.encode() + payload)
        except OSError as e:  # the handler may close before reading everything
            result["error"] = f"send: {e.__class__.__name__}: {e}"
        while True:
            try:
                chunk = sock.recv(262144)
            except ConnectionResetError as e:
                result["error"] = f"recv: ConnectionResetError: {e}"
                break
            if not chunk:
                break
            raw += chunk
    except socket.timeout as e:
        result["error"] = f"timeout: {e}"
    except OSError as e:
        result["error"] = f"{e.__class__.__name__}: {e}"
    finally:
        if sock is not None:
            sock.close()
    result["elapsed"] = round(time.monotonic() - started, 4)
    result["raw_len"] = len(raw)
    status, reason, headers, body, complete = parse_response(bytes(raw))
    result.update(status=status, reason=reason, headers=headers, complete=complete,
                  body_len=len(body), body_sha256=hashlib.sha256(body).hexdigest())
    if len(body) <= args.keep_body:
        result["body"] = body.decode("utf-8", errors="replace")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--path", default="/")
    p.add_argument("--method")
    p.add_argument("--body")
    p.add_argument("--body-size", type=int, default=0)
    p.add_argument("-n", "--count", type=int, default=1)
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--until-file", help="keep going until this file exists (ignores -n)")
    p.add_argument("--keep-body", type=int, default=65536)
    args = p.parse_args()

    payload = make_body(args)
    results = []
    lock = threading.Lock()
    counter = [0]
    t0 = time.monotonic()

    def next_index():
        with lock:
            if args.until_file:
                if os.path.exists(args.until_file):
                    return None
            elif counter[0] >= args.count:
                return None
            counter[0] += 1
            return counter[0] - 1

    def worker():
        while True:
            i = next_index()
            if i is None:
                return
            r = one_request(i, args, payload, t0)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort(key=lambda r: r["i"])
    json.dump({"results": results, "sent_len": len(payload),
               "sent_sha256": hashlib.sha256(payload).hexdigest(),
               "wall": round(time.monotonic() - t0, 3)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
