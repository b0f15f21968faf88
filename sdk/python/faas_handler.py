"""faas_handler: the Python SDK for faasd handlers. One file, stdlib only, Python >= 3.9;
it imports only modules that Debian's python3-minimal has (no json, http or dataclasses).

A faasd handler serves one HTTP request and exits. faasd starts it in a fresh container
per TCP connection; the handler connects to the unix socket $FAAS_CONTROL_SOCKET
(/control.sock), receives the client's socket there, answers it and exits. A function
deployed with `faas new --reuse N` serves up to N clients in turn from one process;
serve() does that by itself (docs/HANDLER_PROTOCOL.md has the whole contract). With this
module:

    import sys
    from faas_handler import serve

    def handle(request):
        name = request.arg("name", "world")
        return 200, {"Content-Type": "text/plain"}, f"Hello, {name}!\\n"

    if __name__ == "__main__":
        sys.exit(serve(handle))

serve() does everything around `handle`: accept() the client, read_request(), call
handle(request), respond() with what it returned, close(), and again for the next
client while reuse() allows. A malformed request is answered 4xx/5xx without calling
handle; an exception in handle is answered 500 Internal Server Error and its traceback
goes to stderr (faasd's log).

Lower-level pieces, for handlers that want to stream or answer by hand:
accept(), read_request(), respond(), close(), reuse(), and the HTTPError exception.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
import traceback
from typing import Callable, Iterable, List, Mapping, Optional, Tuple, Union

__all__ = ["CONTROL_SOCKET", "HTTPError", "Limits", "Request", "accept", "close",
           "read_request", "reason", "respond", "reuse", "serve"]

CONTROL_SOCKET = "/control.sock"

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

_TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def reason(status: int) -> str:
    """The reason phrase of `status` ("Not Found"), "Unknown" for unlisted ones."""
    return _REASONS.get(status, "Unknown")


class HTTPError(Exception):
    """A request that cannot be served: `status` is what to answer (4xx/5xx),
    `message` why. Raise it from a handler to answer with it instead of 500."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message or reason(status))
        self.status = status
        self.message = message or reason(status)


class Limits:
    """Bounds on what read_request() accepts (the C SDK's defaults)."""

    def __init__(self, max_head: int = 64 << 10, max_headers: int = 100,
                 max_body: int = 16 << 20, timeout: Optional[float] = 15.0):
        self.max_head = max_head        # request line + header fields, bytes: 431 (414)
        self.max_headers = max_headers  # header fields: 431
        self.max_body = max_body        # body bytes after chunked decoding: 413
        self.timeout = timeout          # seconds to read the whole request: 408; None: none


class Request:
    """One parsed request. `headers` keeps the fields in order with their names as sent;
    use header() for a case-insensitive lookup."""

    def __init__(self, method: str, path: str, query: str, version: str,
                 headers: List[Tuple[str, str]], body: bytes):
        self.method = method    # "GET", as sent
        self.path = path        # up to '?', not percent-decoded
        self.query = query      # after the first '?', "" when none
        self.version = version  # "HTTP/1.1" or "HTTP/1.0"
        self.headers = headers  # [(name, value)], values stripped, latin-1 decoded
        self.body = body        # bytes, chunked bodies decoded

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first header field called `name` (case-insensitive), else `default`."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return default

    @property
    def args(self) -> dict:
        """The query string as {name: [values]} (form-decoded, blank values kept)."""
        from urllib.parse import parse_qs
        return parse_qs(self.query, keep_blank_values=True)

    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of query parameter `name`, else `default`."""
        values = self.args.get(name)
        return values[0] if values else default

    def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        return self.body.decode(encoding, errors)

    def json(self):
        """The body parsed as JSON (needs the json module: not in python3-minimal)."""
        import json
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HTTPError(400, f"the body is not JSON: {e}") from None

    def __repr__(self) -> str:
        return (f"Request({self.method} {self.path}{'?' if self.query else ''}{self.query}, "
                f"{len(self.headers)} headers, {len(self.body)} body bytes)")


# --- receiving the client -------------------------------------------------------------

def accept(path: Optional[str] = None, timeout: Optional[float] = None) -> socket.socket:
    """Receives the client connection from faasd: connects to `path` (default
    $FAAS_CONTROL_SOCKET, else /control.sock), receives exactly one fd with the payload
    b"SOCKET" and returns it as a blocking socket.socket. faasd kills a handler that has
    not connected within its connect timeout (5 s from the start); set-up done before
    accept(), within that time, is off the request's path when faasd's warm pool started
    the handler ahead of its request. The wait for the client has no timeout by default:
    a pooled handler may wait minutes, and faasd alone ends one it no longer needs.
    `timeout` (seconds) bounds the connect and the wait for callers that want one; do
    not set it under faasd. Call it once per client: again after closing one only when
    reuse() > 1. Raises ConnectionError with a clear message otherwise; its errno is
    ECONNREFUSED or ENOENT when nothing listens at `path`: not under faasd, or, after a
    client, faasd has no more clients for this process."""
    path = path or os.environ.get("FAAS_CONTROL_SOCKET") or CONTROL_SOCKET
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.settimeout(timeout)
        try:
            control.connect(path)
        except OSError as e:
            error = ConnectionError(
                f"cannot connect to the control socket {path}: {e.strerror or e} (not started "
                f"by faasd? faas-local-run runs a handler locally)")
            error.errno = e.errno
            raise error from None
        try:
            msg, fds, flags, _ = socket.recv_fds(control, 16, 8)
        except socket.timeout:
            raise ConnectionError(f"no client socket arrived on {path} within {timeout:g} s") \
                from None
    finally:
        control.close()
    if msg == b"SOCKET" and len(fds) == 1 and not flags & socket.MSG_CTRUNC:
        client = socket.socket(fileno=fds[0])
        client.setblocking(True)
        return client
    for fd in fds:
        os.close(fd)
    if not msg and not fds:
        raise ConnectionError(f"the control socket {path} closed without passing a client socket")
    raise ConnectionError(f"unexpected message on the control socket {path}: {msg[:16]!r} and "
                          f"{len(fds)} fds, expected b'SOCKET' and one fd")


# --- reading the request --------------------------------------------------------------

class _Reader:
    def __init__(self, sock: socket.socket, deadline: Optional[float]):
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.received = 0

    def more(self, where: str) -> None:
        """Reads what arrives next into buf; raises at EOF, the deadline or an error."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise HTTPError(408, f"timed out reading the request ({where})")
            self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise HTTPError(408, f"timed out reading the request ({where})") from None
        except OSError as e:
            raise ConnectionError(f"cannot read the request: {e}") from None
        if not data:
            if self.received == 0:
                raise ConnectionError("the client closed the connection without sending a request")
            raise HTTPError(400, f"the request ended {where}")
        self.received += len(data)
        self.buf += data

    def line(self, what: str, max_len: int) -> bytes:
        while True:
            nl = self.buf.find(b"\n")
            if nl > max_len or (nl < 0 and len(self.buf) > max_len):
                raise HTTPError(400, f"a {what} is longer than {max_len} bytes")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if b"\r" in line or b"\0" in line:
                    raise HTTPError(400, f"bad character in a {what}")
                return line
            self.more(f"in a {what}")

    def exact(self, n: int, where: str) -> bytes:
        while len(self.buf) < n:
            self.more(where() if callable(where) else where)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


def _q(text: Union[bytes, str], limit: int) -> str:
    """`text` cut at `limit` characters, in double quotes, for messages."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return '"' + text[:limit] + '"'


def _is_token(s: bytes) -> bool:
    return bool(s) and all(c in _TCHARS for c in s)


def _head_end(buf: bytearray, start: int) -> int:
    """Offset just past the empty line ending the head, searching from `start`; -1."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\n\r\n", start)
    ends = [i + 2 for i in (lf,) if i >= 0] + [i + 3 for i in (crlf,) if i >= 0]
    return min(ends) if ends else -1


def _parse_request_line(line: bytes):
    parts = line.split(b" ")
    if len(parts) != 3 or not _is_token(parts[0]) or not parts[1]:
        raise HTTPError(400, f"bad request line {_q(line, 80)}")
    method, target, version = parts
    if any(c <= 0x20 or c == 0x7F for c in target):
        raise HTTPError(400, "bad character in the request target")
    if len(version) == 8 and version.startswith(b"HTTP/") and version[6:7] == b"." and \
            version[5:6].isdigit() and version[7:8].isdigit():
        if version[5:6] != b"1":
            raise HTTPError(505, f"HTTP version {_q(version, 20)} is not supported "
                                 f"(only 1.0 and 1.1)")
        version = b"HTTP/1.0" if version == b"HTTP/1.0" else b"HTTP/1.1"
    else:
        raise HTTPError(400, f"bad HTTP version {_q(version, 20)}")
    target_s = target.decode("latin-1")
    if not target_s.startswith("/") and target_s != "*":
        lower = target_s.lower()
        scheme = 7 if lower.startswith("http://") else 8 if lower.startswith("https://") else 0
        if not scheme:
            raise HTTPError(400, f"bad request target {_q(target_s, 80)}")
        rest = target_s[scheme:]
        cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
        target_s = rest[cut:]
        if not target_s.startswith("/"):
            target_s = "/" + target_s
    path, _, query = target_s.partition("?")
    return method.decode("ascii"), path, query, version.decode("ascii")


def _parse_header(line: bytes) -> Tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HTTPError(400, "obsolete line folding in the header fields is not supported")
    name, colon, value = line.partition(b":")
    if not colon or not _is_token(name):
        raise HTTPError(400, f"bad header field {_q(line, 60)}")
    value = value.strip(b" \t")
    if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
        raise HTTPError(400, f"bad character in header field {name[:60].decode('latin-1')}")
    return name.decode("latin-1"), value.decode("latin-1")


def _framing(headers: List[Tuple[str, str]], max_body: int):
    """(chunked, length) of the body."""
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cls = [v for k, v in headers if k.lower() == "content-length"]
    for other in cls[1:]:
        if other != cls[0]:
            raise HTTPError(400, f"conflicting Content-Length values {cls[0][:30]} and "
                                 f"{other[:30]}")
    cl = set(cls)
    if te:
        if cl:
            raise HTTPError(400, "both Transfer-Encoding and Content-Length are set")
        if len(te) > 1 or te[0].lower() != "chunked":
            raise HTTPError(501, f"Transfer-Encoding {_q(te[-1], 40)} is not supported "
                                 f"(only chunked)")
        return True, 0
    if not cl:
        return False, 0
    value = cl.pop()
    if not value or not value.isascii() or not value.isdigit():
        raise HTTPError(400, f"bad Content-Length {_q(value, 30)}")
    length = int(value)
    if length > max_body:
        raise HTTPError(413, f"the body of {value[:30]} bytes is over the limit of "
                             f"{max_body} bytes")
    return False, length


def _read_chunked(reader: _Reader, limits: Limits) -> bytes:
    body = bytearray()
    while True:
        line = reader.line("chunk size line", 8192)
        size_part = line.split(b";", 1)[0].rstrip(b" \t")
        if not size_part or any(c not in b"0123456789abcdefABCDEF" for c in size_part):
            raise HTTPError(400, f"bad chunk size {_q(line, 40)}")
        size = int(size_part, 16)
        if size == 0:
            break
        if size > limits.max_body - len(body):
            raise HTTPError(413, f"the chunked body is over the limit of {limits.max_body} bytes")
        body += reader.exact(size, "in the middle of a chunk")
        if reader.line("chunk end", 8192):
            raise HTTPError(400, "chunk data is not followed by a line end")
    trailer = 0
    while True:
        line = reader.line("trailer field", 8192)
        if not line:
            return bytes(body)
        trailer += len(line)
        if trailer > limits.max_head:
            raise HTTPError(431, f"the trailer fields are longer than {limits.max_head} bytes")


def read_request(sock: socket.socket, limits: Optional[Limits] = None) -> Request:
    """Reads one request from `sock`. Raises HTTPError(status, why) for a request to
    answer with 400, 408, 413, 414, 431, 501 or 505 (the C SDK's rules), and
    ConnectionError when there is nobody to answer (nothing arrived, or a socket error).
    An HTTP/1.1 request with "Expect: 100-continue" and a body within the limits gets the
    interim "HTTP/1.1 100 Continue" before the body is read."""
    limits = limits or Limits()
    deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
    reader = _Reader(sock, deadline)
    buf = reader.buf
    scanned = 0
    while True:
        skip = len(buf) - len(buf.lstrip(b"\r\n"))
        end = _head_end(buf, max(skip, scanned))
        if 0 <= end <= limits.max_head:
            break
        if end > limits.max_head or len(buf) >= limits.max_head:
            if b"\n" not in buf[skip:limits.max_head]:
                raise HTTPError(414, f"the request line is longer than {limits.max_head} bytes")
            raise HTTPError(431, f"the header fields are longer than {limits.max_head} bytes")
        scanned = max(0, len(buf) - 2)
        reader.more("before the end of the header fields")
    head = bytes(buf[skip:end])
    del buf[:end]
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in head.split(b"\n")]
    lines = lines[:lines.index(b"")]
    if any(b"\r" in ln or b"\0" in ln for ln in lines):
        raise HTTPError(400, "bad character (CR or NUL) in the request head")
    if len(lines) - 1 > limits.max_headers:
        raise HTTPError(431, f"{len(lines) - 1} header fields, more than the limit of "
                             f"{limits.max_headers}")
    method, path, query, version = _parse_request_line(lines[0])
    headers = [_parse_header(ln) for ln in lines[1:]]
    chunked, length = _framing(headers, limits.max_body)
    expect = next((v for k, v in headers if k.lower() == "expect"), "")
    if version == "HTTP/1.1" and expect.lower() == "100-continue" and (chunked or length):
        # The client waits for this before it sends the body (curl: bodies over 1 MiB).
        try:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError as e:
            raise ConnectionError(f"cannot send 100 Continue: {e}") from None
    if chunked:
        body = _read_chunked(reader, limits)
    else:
        body = reader.exact(length, lambda: f"after {len(reader.buf)} of {length} body bytes")
    return Request(method, path, query, version, headers, body)


# --- answering ------------------------------------------------------------------------

HeadersLike = Union[None, Mapping[str, str], Iterable[Tuple[str, str]]]


def _header_pairs(headers: HeadersLike) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for name, value in items:
        name, value = str(name), str(value)
        if not _is_token(name.encode("latin-1", "replace")) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid header field {name!r}: {value!r}")
        if name.lower() in ("content-length", "connection", "transfer-encoding"):
            raise ValueError(f"{name} is set by faas_handler; do not pass it")
        pairs.append((name, value))
    return pairs


def respond(sock: socket.socket, status: int, headers: HeadersLike = None,
            body: Union[bytes, bytearray, memoryview, str, None] = b"") -> None:
    """Sends one complete response: the status line, `headers` (a dict or (name, value)
    pairs), Content-Length and "Connection: close", then `body`. A str body is sent as
    UTF-8, with "Content-Type: text/plain; charset=utf-8" unless headers set one.
    Raises ValueError for a status outside 200..599 or a header with CR/LF (nothing is
    sent then), OSError when the client went away."""
    if not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"invalid status {status!r}: use 200..599")
    pairs = _header_pairs(headers)
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8")
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("Content-Type", "text/plain; charset=utf-8"))
    body = bytes(body)
    if status in (204, 304):
        body = b""
    else:
        pairs.append(("Content-Length", str(len(body))))
    pairs.append(("Connection", "close"))
    head = f"HTTP/1.1 {status} {reason(status)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs)
    sock.sendall(head.encode("latin-1", "replace") + b"\r\n" + body)


def close(sock: socket.socket, drain_bytes: int = 1 << 20, drain_seconds: float = 2.0) -> None:
    """Ends the connection politely: shuts down sending (the client sees the end of the
    answer), discards what the client still sends until it closes (bounded), closes.
    Closing with unread input would reset the connection and could lose the answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + drain_seconds
        drained = 0
        while drained < drain_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass
    finally:
        sock.close()


Result = Union[Tuple[int, HeadersLike, object], Tuple[int, object], bytes, str]


def _normalize(result) -> Tuple[int, HeadersLike, object]:
    if isinstance(result, (bytes, bytearray, memoryview, str)):
        return 200, None, result
    if isinstance(result, tuple) and len(result) == 3:
        return result
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], None, result[1]
    raise TypeError(f"the handler returned {type(result).__name__}; expected "
                    f"(status, headers, body), (status, body), bytes or str")


def _log(message: str) -> None:
    print(f"faas_handler: {message}", file=sys.stderr, flush=True)


def reuse() -> int:
    """How many clients this process may serve in turn: $FAAS_REUSE, which faasd sets
    from `faas new --reuse N` (1 when it is unset, not a number or below 1)."""
    value = os.environ.get("FAAS_REUSE", "")
    if value.isascii() and value.isdigit():  # no sign, no spaces
        return max(1, int(value))
    return 1


def serve(fn: Callable[[Request], Result], limits: Optional[Limits] = None,
          sock: Optional[socket.socket] = None) -> int:
    """Serves the request: accept(), read_request(), fn(request), respond(), close();
    up to reuse() times, one client after the other. After a client, a refused connect
    is faasd having no more clients for this process: serve() returns then, quietly. No
    client stays open into the next request; what fn keeps in globals is seen by it.
    With `sock`, serves that one client instead.
    `fn` returns (status, headers, body), (status, body) or just a body (200); headers
    are a dict or (name, value) pairs, None for none; the body is bytes or str. A
    malformed request is answered 4xx/5xx without calling fn; HTTPError raised by fn is
    answered with its status; any other exception, or a result of the wrong shape, with
    500 (traceback on stderr).
    Returns the exit status for sys.exit(), of the last client: 0 when fn succeeded or
    a malformed request was answered, 1 otherwise, and 1 when there was no client."""
    if sock is not None:
        return _serve_client(fn, limits, sock)
    status = 1
    for served in range(reuse()):
        try:
            sock = accept()
        except ConnectionError as e:
            # faasd stops listening once it has handed this process all its clients.
            if served and e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                break
            _log(str(e))
            return 1
        status = _serve_client(fn, limits, sock)
    return status


def _serve_client(fn, limits, sock) -> int:
    """Serves the client on `sock` and closes it. Returns its exit status."""
    try:
        try:
            request = read_request(sock, limits)
        except HTTPError as e:
            _log(f"answering {e.status}: {e.message}")
            _try_respond(sock, e.status, None, e.message + "\n")
            return 0
        except ConnectionError as e:
            _log(str(e))
            return 1
        try:
            status, headers, body = _normalize(fn(request))
            if not isinstance(body, (bytes, bytearray, memoryview, str, type(None))):
                raise TypeError(f"the body is {type(body).__name__}; expected bytes or str")
            head_pairs = _header_pairs(headers)
            if not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError(f"invalid status {status!r}: use 200..599")
        except HTTPError as e:
            _log(f"answering {e.status}: {e.message}")
            return 0 if _try_respond(sock, e.status, None, e.message + "\n") else 1
        except Exception:  # noqa: BLE001 - any failure of the handler is a 500
            _log(f"the handler failed on {request!r}:\n{traceback.format_exc().rstrip()}")
            _try_respond(sock, 500, None, "Internal Server Error\n")
            return 1
        return 0 if _try_respond(sock, status, head_pairs, body) else 1
    finally:
        close(sock)


def _try_respond(sock, status, headers, body) -> bool:
    try:
        respond(sock, status, headers, body)
        return True
    except OSError as e:
        _log(f"cannot send the answer: {e}")
        return False
