#!/usr/bin/python3
"""Raw control-API clients that run INSIDE the VM (stdlib only), for tests that need
what curl cannot do: send an image at a chosen pace, hang up at a chosen moment, or
hold many idle connections. Each prints one JSON document.

    apiclient.py deploy SOCKET NAME IMAGE [--trickle-until FILE | --trickle-seconds S]
                 [--stall-after BYTES] [--hangup]
        POST /api/new with Content-Length. --trickle-*: 1 KiB every 100 ms until FILE
        exists (or for S seconds), then the rest at once; --stall-after: send BYTES,
        then nothing; --hangup: close right after the whole image is sent.
        -> {"status", "body", "closed_without_answer", "elapsed", "sent"}
    apiclient.py flood HOST PORT COUNT READY_FILE TIMEOUT
        opens COUNT idle TCP connections, touches READY_FILE, then waits (up to
        TIMEOUT s) for faasd to close them.
        -> {"opened", "open_errors", "lifetimes" (seconds from open to close, or null)}
    apiclient.py raw SOCKET_OR_HOST:PORT REQUEST TIMEOUT
        sends REQUEST (Python escapes such as \\r\\n are decoded) and reads until faasd
        closes the connection or TIMEOUT s pass.
        -> {"reply", "closed", "elapsed"}
"""

import json
import os
import select
import socket
import sys
import time


def connect(where):
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(where)
        return s
    host, port = where.rsplit(":", 1)
    return socket.create_connection((host, int(port)))


def read_to_close(s, timeout):
    """(bytes, closed): everything read until EOF/reset, or until the timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, body.decode(errors="replace")


def send_paced(s, image, args):
    """Sends the image as the options say; returns how many bytes were sent."""
    sent = 0
    start = time.monotonic()

    def trickling():
        if args.get("--trickle-until"):
            return not os.path.exists(args["--trickle-until"])
        if args.get("--trickle-seconds"):
            return time.monotonic() - start < float(args["--trickle-seconds"])
        return False

    while trickling() and sent < len(image) - 1:
        s.sendall(image[sent:sent + 1024])
        sent = min(sent + 1024, len(image))
        time.sleep(0.1)
    while trickling():  # the image is spent: hold its last byte back
        time.sleep(0.1)
    if "--stall-after" in args:
        stall = int(args["--stall-after"])
        s.sendall(image[sent:stall])
        return stall
    s.sendall(image[sent:])
    return len(image)


def deploy(sock_path, name, image_path, args):
    with open(image_path, "rb") as f:
        image = f.read()
    s = connect(sock_path)
    start = time.monotonic()
    head = (f"POST /api/new HTTP/1.1\r\nHost: localhost\r\nX-Image-Name: {name}\r\n"
            f"Content-Length: {len(image)}\r\n\r\n").encode()
    s.sendall(head)
    try:
        sent = send_paced(s, image, args)
    except (BrokenPipeError, ConnectionResetError):
        sent = None
    if "--hangup" in args:
        s.close()
        return {"status": None, "body": "", "closed_without_answer": None,
                "elapsed": time.monotonic() - start, "sent": sent}
    raw, _ = read_to_close(s, 600)
    s.close()
    status, body = parse(raw)
    return {"status": status, "body": body, "closed_without_answer": raw == b"",
            "elapsed": time.monotonic() - start, "sent": sent}


def flood(host, port, count, ready, timeout):
    conns, errors = [], 0
    for _ in range(count):
        try:
            conns.append((socket.create_connection((host, port), timeout=5), time.monotonic()))
        except OSError:
            errors += 1
    with open(ready, "w"):
        pass
    lifetimes = [None] * len(conns)
    open_ = {c.fileno(): i for i, (c, _) in enumerate(conns)}
    poller = select.poll()
    for fd in open_:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            i = open_.pop(fd, None)
            if i is None:
                continue
            poller.unregister(fd)
            lifetimes[i] = time.monotonic() - conns[i][1]
    for c, _ in conns:
        c.close()
    return {"opened": len(conns), "open_errors": errors, "lifetimes": lifetimes}


def raw(where, request, timeout):
    s = connect(where)
    start = time.monotonic()
    s.sendall(request.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    reply, closed = read_to_close(s, timeout)
    s.close()
    return {"reply": reply.decode(errors="replace"), "closed": closed,
            "elapsed": time.monotonic() - start}


def options(rest):
    out, i = {}, 0
    while i < len(rest):
        if rest[i] == "--hangup":
            out["--hangup"] = True
            i += 1
        else:
            out[rest[i]] = rest[i + 1]
            i += 2
    return out


def main(argv):
    cmd = argv[1]
    if cmd == "deploy":
        result = deploy(argv[2], argv[3], argv[4], options(argv[5:]))
    elif cmd == "flood":
        result = flood(argv[2], int(argv[3]), int(argv[4]), argv[5], float(argv[6]))
    elif cmd == "raw":
        result = raw(argv[2], argv[3], float(argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
