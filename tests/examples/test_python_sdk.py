"""Unit tests of the Python SDK (sdk/python/faas_handler.py) and of faas-local-run
(sdk/tools/faas-local-run): in-process over socket pairs and a fake control socket, and
end to end on 127.0.0.1 (never a 10.x address)."""

from __future__ import annotations

import inspect
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "sdk" / "python"))

import faas_handler  # noqa: E402
from faas_handler import HTTPError, Limits, read_request, respond, serve  # noqa: E402

pytestmark = pytest.mark.unit

LOCAL_RUN = REPO / "sdk" / "tools" / "faas-local-run"
PYTHON = "/usr/bin/python3"


# --- helpers ----------------------------------------------------------------------------

def parse(raw: bytes, limits=None, keep_open=False):
    """faas_handler.read_request() on `raw` sent from another thread: the Request, or the
    exception it raised."""
    peer, handler = socket.socketpair()

    def write():
        try:
            peer.sendall(raw)
            if not keep_open:
                peer.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    writer = threading.Thread(target=write)
    writer.start()
    try:
        return read_request(handler, limits)
    except (HTTPError, ConnectionError) as e:
        return e
    finally:
        handler.close()
        writer.join()
        peer.close()


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, headers, body


def read_all(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def serve_raw(fn, raw: bytes, limits=None):
    """serve(fn) on a socket pair: (exit status, status, headers, body)."""
    peer, handler = socket.socketpair()
    peer.sendall(raw)
    peer.shutdown(socket.SHUT_WR)
    rc = serve(fn, limits, sock=handler)
    status, headers, body = split_response(read_all(peer))
    peer.close()
    return rc, status, headers, body


CHUNKED = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


# --- read_request -----------------------------------------------------------------------

def test_simple_get():
    r = parse(b"GET /hello/world?x=1&y=two HTTP/1.1\r\nHost: example\r\nX-A:  spaced \t\r\n\r\n")
    assert (r.method, r.path, r.query, r.version) == ("GET", "/hello/world", "x=1&y=two",
                                                      "HTTP/1.1")
    assert r.headers == [("Host", "example"), ("X-A", "spaced")]
    assert r.header("host") == "example" and r.header("missing", "d") == "d"
    assert r.body == b""
    assert r.args == {"x": ["1"], "y": ["two"]}
    assert r.arg("y") == "two" and r.arg("z") is None


def test_bodies():
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world").body == \
        b"hello world"
    r = parse(CHUNKED + b"5;ext=1\r\nhello\r\n1 \r\n,\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n")
    assert r.body == b"hello, world"
    big = os.urandom(3 << 20)
    assert parse(b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big).body == big


def test_lenient_forms():
    r = parse(b"\r\n\nGET /lf HTTP/1.0\nA: 1\n\n")
    assert (r.path, r.version, r.headers) == ("/lf", "HTTP/1.0", [("A", "1")])
    r = parse(b"GET http://host:8080/a/b?q=1 HTTP/1.1\r\n\r\n")
    assert (r.path, r.query) == ("/a/b", "q=1")
    r = parse(b"GET HTTPS://host?only HTTP/1.1\r\n\r\n")
    assert (r.path, r.query) == ("/", "only")
    assert parse(b"GET / HTTP/1.7\r\n\r\n").version == "HTTP/1.1"
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n").body \
        == b"ok"


MALFORMED = [
    ("no_version", b"GET /\r\n\r\n", 400, "bad request line"),
    ("double_space", b"GET  / HTTP/1.1\r\n\r\n", 400, "bad request line"),
    ("bad_method", b"G(T / HTTP/1.1\r\n\r\n", 400, "bad request line"),
    ("not_http", b"GET / FTP/1.1\r\n\r\n", 400, "bad HTTP version"),
    ("http2", b"GET / HTTP/2.0\r\n\r\n", 505, "not supported"),
    ("relative_target", b"GET foo HTTP/1.1\r\n\r\n", 400, "bad request target"),
    ("binary", b"\x16\x03\x01\x02\x00\x01\xfc\r\n\r\n", 400, "bad"),
    ("obs_fold", b"GET / HTTP/1.1\r\nA: 1\r\n  folded\r\n\r\n", 400, "folding"),
    ("no_colon", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "bad header field"),
    ("space_before_colon", b"GET / HTTP/1.1\r\nA : 1\r\n\r\n", 400, "bad header field"),
    ("control_in_value", b"GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n", 400, "bad character"),
    ("bare_cr", b"GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", 400, "CR or NUL"),
    ("truncated_head", b"GET / HTTP/1.1\r\nHost: x\r\n", 400, "before the end of the header"),
    ("cl_conflict", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
     "conflicting Content-Length values 3 and 4"),
    ("cl_not_number", b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", 400,
     "bad Content-Length"),
    ("cl_negative", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad Content-Length"),
    ("cl_over_limit", b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413,
     "over the limit of 1000"),
    ("truncated_body", b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabcd", 400,
     "after 4 of 10 body bytes"),
    ("te_and_cl", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
     400, "both"),
    ("te_gzip", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
     "not supported"),
    ("chunk_not_hex", CHUNKED + b"zz\r\nab\r\n0\r\n\r\n", 400, 'bad chunk size "zz"'),
    ("chunk_negative", CHUNKED + b"-1\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"),
    ("chunk_0x", CHUNKED + b"0x2\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"),
    ("chunk_overflow", CHUNKED + b"fffffffffffffffffffff\r\n", 413, "over the limit"),
    ("chunks_over_limit", CHUNKED + b"200\r\n" + b"a" * 512 + b"\r\n200\r\n" + b"b" * 512 +
     b"\r\n0\r\n\r\n", 413, "over the limit of 1000"),
    ("chunk_too_long", CHUNKED + b"2\r\nabc\r\n0\r\n\r\n", 400, "not followed by a line end"),
    ("chunk_truncated", CHUNKED + b"10\r\nabc", 400, "in the middle of a chunk"),
    ("no_last_chunk", CHUNKED + b"3\r\nabc\r\n", 400, "chunk size line"),
    ("chunk_line_too_long", CHUNKED + b"1;" + b"e" * 10000 + b"\r\n", 400, "longer than"),
]


@pytest.mark.parametrize("raw,status,part", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_requests_are_refused(raw, status, part):
    e = parse(raw, Limits(max_body=1000))
    assert isinstance(e, HTTPError), e
    assert e.status == status and part in e.message, (e.status, e.message)


def test_size_limits():
    e = parse(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", Limits(max_head=4096))
    assert (e.status, "request line" in e.message) == (414, True)
    e = parse(b"GET / HTTP/1.1\r\nBig: " + b"a" * 100000 + b"\r\n\r\n")
    assert e.status == 431 and "65536" in e.message
    e = parse(b"GET / HTTP/1.1\r\n" + b"X-Filler: yes\r\n" * 20000, keep_open=True)
    assert e.status == 431
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n"
    assert parse(many).status == 431
    assert parse(many, Limits(max_headers=200)).method == "GET"


def test_timeout_and_nothing_sent():
    start = time.monotonic()
    e = parse(b"GET / HTTP/1.1\r\nHost: x\r\n", Limits(timeout=0.2), keep_open=True)
    assert e.status == 408 and time.monotonic() - start < 5
    e = parse(b"")
    assert isinstance(e, ConnectionError) and "without sending a request" in str(e)


def test_expect_100_continue():
    peer, handler = socket.socketpair()
    result = []
    reader = threading.Thread(target=lambda: result.append(read_request(handler)))
    reader.start()
    peer.sendall(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n")
    assert peer.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    peer.sendall(b"data")
    reader.join()
    assert result[0].body == b"data"
    for raw in (b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
                b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"):
        peer2, handler2 = socket.socketpair()
        peer2.sendall(raw)
        peer2.shutdown(socket.SHUT_WR)
        read_request(handler2)
        handler2.close()
        assert read_all(peer2) == b"", raw
        peer2.close()
    peer.close()
    handler.close()


# --- respond / serve ----------------------------------------------------------------------

def test_respond_formats():
    peer, handler = socket.socketpair()
    respond(handler, 200, {"Content-Type": "text/plain"}, b"hi\n")
    respond(handler, 404, None, "missing")
    respond(handler, 204, [("X-A", "1")], b"ignored")
    handler.close()
    assert read_all(peer) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nhi\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 7\r\nConnection: close\r\n\r\nmissing"
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nConnection: close\r\n\r\n")
    peer.close()


@pytest.mark.parametrize("status,headers", [
    (200, {"X-A": "v\r\nSet-Cookie: evil=1"}), (200, {"X A": "v"}), (200, {"": "v"}),
    (200, {"Content-Length": "5"}), (100, None), (600, None), ("200", None)])
def test_respond_refuses_bad_input(status, headers):
    peer, handler = socket.socketpair()
    with pytest.raises(ValueError):
        respond(handler, status, headers, b"")
    handler.close()
    assert read_all(peer) == b""
    peer.close()


REQUEST = b"POST /x?name=Ada+L HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"


@pytest.mark.parametrize("result,status,body,ctype", [
    ((201, {"Content-Type": "application/json"}, b"{}"), 201, b"{}", "application/json"),
    ((202, "text"), 202, b"text", "text/plain; charset=utf-8"),
    ("just text", 200, b"just text", "text/plain; charset=utf-8"),
    (b"bytes", 200, b"bytes", None),
    ((200, None, None), 200, b"", None),
])
def test_serve_result_shapes(result, status, body, ctype):
    rc, got_status, headers, got_body = serve_raw(lambda req: result, REQUEST)
    assert (rc, got_status, got_body, headers.get("Content-Type")) == (0, status, body, ctype)
    assert headers["Content-Length"] == str(len(body))


def test_serve_passes_the_request():
    seen = []
    rc, status, _, body = serve_raw(lambda req: seen.append(req) or f"{req.arg('name')}", REQUEST)
    assert (rc, status, body) == (0, 200, b"Ada L")
    assert (seen[0].method, seen[0].path, seen[0].body) == ("POST", "/x", b"hi")


def test_serve_answers_500_on_exceptions_and_bad_results(capsys):
    def boom(req):
        raise RuntimeError("kaputt")
    rc, status, _, body = serve_raw(boom, REQUEST)
    assert (rc, status, body) == (1, 500, b"Internal Server Error\n")
    err = capsys.readouterr().err
    assert "RuntimeError: kaputt" in err and "Traceback" in err
    for bad in ([1, 2], (200, {}, 42), (99, None, b""), (200, {"A\n": "b"}, b"")):
        rc, status, _, _ = serve_raw(lambda req, bad=bad: bad, REQUEST)
        assert (rc, status) == (1, 500), bad


def test_serve_answers_http_errors():
    def refuse(req):
        raise HTTPError(403, "no entry")
    assert serve_raw(refuse, REQUEST)[:2] == (0, 403)
    assert serve_raw(refuse, REQUEST)[3] == b"no entry\n"
    rc, status, _, body = serve_raw(lambda req: "never", CHUNKED + b"zz\r\n")
    assert (rc, status, body) == (0, 400, b'bad chunk size "zz"\n')


# --- accept -------------------------------------------------------------------------------

class FakeControl:
    """faasd's side of the control socket: passes `payload` and `fds` to whoever connects,
    `delay` seconds after the connect (as faasd does for a handler of its warm pool)."""

    def __init__(self, tmp_path: Path, payload: bytes, fds, delay: float = 0.0):
        self.path = str(tmp_path / "control.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._pass, args=(payload, fds, delay))
        self.thread.start()

    def _pass(self, payload, fds, delay):
        conn, _ = self.listener.accept()
        self.connected.set()
        time.sleep(delay)
        with conn:
            if payload or fds:
                try:
                    socket.send_fds(conn, [payload], fds)
                except OSError:
                    pass  # the handler gave up waiting

    def close(self):
        self.thread.join()
        self.listener.close()


def test_accept_receives_the_client(tmp_path, monkeypatch):
    peer, passed = socket.socketpair()
    control = FakeControl(tmp_path, b"SOCKET", [passed.fileno()])
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", control.path)
    client = faas_handler.accept()
    control.close()
    passed.close()
    client.sendall(b"through")
    client.close()
    assert read_all(peer) == b"through"


def test_accept_waits_for_a_late_client_without_a_timeout(tmp_path, monkeypatch):
    """A handler of faasd's warm pool connects long before its client comes: accept()
    puts no timeout on the wait by default (faasd alone ends a waiting handler)."""
    assert inspect.signature(faas_handler.accept).parameters["timeout"].default is None
    timeouts = []
    real_settimeout = socket.socket.settimeout
    monkeypatch.setattr(socket.socket, "settimeout",
                        lambda sock, value: timeouts.append(value) or real_settimeout(sock, value))
    peer, passed = socket.socketpair()
    control = FakeControl(tmp_path, b"SOCKET", [passed.fileno()], delay=0.5)
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", control.path)
    start = time.monotonic()
    client = faas_handler.accept()
    waited = time.monotonic() - start
    control.close()
    passed.close()
    assert waited >= 0.5 and control.connected.is_set()
    assert timeouts == [None], timeouts
    assert client.gettimeout() is None
    client.sendall(b"late")
    client.close()
    assert read_all(peer) == b"late"


def test_accept_timeout_when_the_caller_asks_for_one(tmp_path, monkeypatch):
    peer, passed = socket.socketpair()
    control = FakeControl(tmp_path, b"SOCKET", [passed.fileno()], delay=1.0)
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", control.path)
    with pytest.raises(ConnectionError, match=r"no client socket arrived on .* within 0.2 s"):
        faas_handler.accept(timeout=0.2)
    control.close()
    peer.close()
    passed.close()


@pytest.mark.parametrize("payload,nfds,part", [
    (b"SOCKEX", 1, "unexpected message"), (b"SOCKET", 2, "2 fds"), (b"SOCKET", 0, "0 fds"),
    (b"", 0, "closed without passing a client socket")])
def test_accept_refuses_wrong_messages(tmp_path, monkeypatch, payload, nfds, part):
    pairs = [socket.socketpair() for _ in range(nfds)]
    before = len(os.listdir("/proc/self/fd"))
    control = FakeControl(tmp_path, payload, [b.fileno() for _, b in pairs])
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", control.path)
    with pytest.raises(ConnectionError, match=part):
        faas_handler.accept()
    control.close()
    assert len(os.listdir("/proc/self/fd")) == before  # the received fds were closed
    for a, b in pairs:
        a.close()
        b.close()


def test_accept_explains_a_missing_socket(monkeypatch):
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", "/nonexistent/control.sock")
    with pytest.raises(ConnectionError, match=r"cannot connect to the control socket "
                                              r"/nonexistent/control.sock: No such file.*"
                                              r"faas-local-run"):
        faas_handler.accept()
    assert serve(lambda req: "x") == 1


# --- serve with FAAS_REUSE -------------------------------------------------------------------

class ReusedControl:
    """faasd's side of the control socket of a reused container: hands `clients` clients
    in turn, each once the previous one has its answer, then ends as `end` says: "keep"
    listening (a reconnect would wait), "stop" listening (ECONNREFUSED, as faasd does after
    the last client), "remove" the socket (ENOENT), or "hang-up" (accept the next connect
    and close it without a client)."""

    def __init__(self, tmp_path: Path, clients: int, end: str):
        self.path = str(tmp_path / "control.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.answers = []
        self.thread = threading.Thread(target=self._run, args=(clients, end))
        self.thread.start()

    def _run(self, clients, end):
        for i in range(1, clients + 1):
            peer, passed = socket.socketpair()
            self.listener.settimeout(10)
            conn, _ = self.listener.accept()
            with conn:
                socket.send_fds(conn, [b"SOCKET"], [passed.fileno()])
            passed.close()
            if i == clients and end in ("stop", "remove"):  # before it can reconnect
                self.listener.close()
                if end == "remove":
                    os.unlink(self.path)
            body = b"b%d" % i
            peer.sendall(b"POST /%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
                         % (i, len(body), body))
            peer.shutdown(socket.SHUT_WR)
            self.answers.append(split_response(read_all(peer)))
            peer.close()
        if end == "hang-up":
            self.listener.accept()[0].close()

    def finish(self) -> bool:
        """Waits for the clients; returns whether a connect is waiting to be accepted."""
        self.thread.join()
        if self.listener.fileno() < 0:
            return False
        waiting = bool(select.select([self.listener], [], [], 0)[0])
        self.listener.close()
        return waiting


def serve_reused(tmp_path, monkeypatch, reuse, clients, end, fn):
    """serve(fn) with FAAS_REUSE=`reuse` (None: unset) against a ReusedControl:
    (exit status, [(status, headers, body)], whether it connected again)."""
    control = ReusedControl(tmp_path, clients, end)
    monkeypatch.setenv("FAAS_CONTROL_SOCKET", control.path)
    if reuse is None:
        monkeypatch.delenv("FAAS_REUSE", raising=False)
    else:
        monkeypatch.setenv("FAAS_REUSE", reuse)
    rc = serve(fn)
    reconnected = control.finish()
    return rc, control.answers, reconnected


def counting_handler():
    """A handler that numbers its requests (its state carries over, as in a reused
    process) and raises on a path of /fail."""
    seen = []

    def handle(request):
        seen.append(request.path)
        if request.path == "/fail":
            raise RuntimeError("asked to fail")
        return f"request {len(seen)} {request.path} {request.text()}"
    return handle


@pytest.mark.parametrize("value,uses", [
    (None, 1), ("", 1), ("1", 1), ("3", 3), ("10000", 10000), ("0", 1), ("-3", 1), ("+3", 1),
    (" 3", 1), ("3x", 1), ("abc", 1), ("٣", 1)])
def test_reuse_is_a_count_of_at_least_one(monkeypatch, value, uses):
    if value is None:
        monkeypatch.delenv("FAAS_REUSE", raising=False)
    else:
        monkeypatch.setenv("FAAS_REUSE", value)
    assert faas_handler.reuse() == uses


def test_serve_serves_faas_reuse_clients_in_turn(tmp_path, monkeypatch, capsys):
    fds_before = len(os.listdir("/proc/self/fd"))
    rc, answers, reconnected = serve_reused(tmp_path, monkeypatch, "3", 3, "keep",
                                            counting_handler())
    assert rc == 0
    assert [(a[0], a[2]) for a in answers] == [
        (200, b"request 1 /1 b1"), (200, b"request 2 /2 b2"), (200, b"request 3 /3 b3")]
    assert not reconnected, "connected again after its third client"
    assert capsys.readouterr().err == ""
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.parametrize("end", ["stop", "remove"])
def test_serve_stops_quietly_when_faasd_has_no_more_clients(tmp_path, monkeypatch, capsys, end):
    rc, answers, _ = serve_reused(tmp_path, monkeypatch, "5", 2, end, counting_handler())
    assert rc == 0
    assert [a[2] for a in answers] == [b"request 1 /1 b1", b"request 2 /2 b2"]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("reuse", [None, "1", "0", "-2", "many"])
def test_serve_without_faas_reuse_serves_one_and_never_reconnects(tmp_path, monkeypatch,
                                                                   reuse):
    rc, answers, reconnected = serve_reused(tmp_path, monkeypatch, reuse, 1, "keep",
                                            counting_handler())
    assert (rc, [a[2] for a in answers], reconnected) == (0, [b"request 1 /1 b1"], False)


def test_serve_exit_status_is_the_last_clients(tmp_path, monkeypatch):
    def fail_first(request):
        if request.path == "/1":
            raise RuntimeError("first")
        return "fine"
    rc, answers, _ = serve_reused(tmp_path, monkeypatch, "2", 2, "stop", fail_first)
    assert (rc, [a[0] for a in answers]) == (0, [500, 200])

    def fail_second(request):
        if request.path == "/2":
            raise RuntimeError("second")
        return "fine"
    (tmp_path / "again").mkdir()
    rc, answers, _ = serve_reused(tmp_path / "again", monkeypatch, "2", 2, "stop", fail_second)
    assert (rc, [a[0] for a in answers]) == (1, [200, 500])


def test_serve_reports_a_control_socket_closed_without_a_client(tmp_path, monkeypatch, capsys):
    rc, answers, _ = serve_reused(tmp_path, monkeypatch, "3", 1, "hang-up", counting_handler())
    assert (rc, len(answers)) == (1, 1)
    assert "closed without passing a client socket" in capsys.readouterr().err


def test_serve_keeps_no_fds_across_many_clients(tmp_path, monkeypatch):
    fds_before = len(os.listdir("/proc/self/fd"))
    rc, answers, reconnected = serve_reused(tmp_path, monkeypatch, "200", 200, "keep",
                                            counting_handler())
    assert (rc, len(answers), reconnected) == (0, 200, False)
    assert answers[-1][2] == b"request 200 /200 b200"
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_sdk_needs_only_python3_minimal():
    """Debian's python3-minimal has no json, http, email or dataclasses: the SDK must
    import and serve without them."""
    code = ("import sys; sys.modules.update({m: None for m in "
            "('json', 'http', 'email', 'dataclasses', 'decimal', 'asyncio')}); "
            "import socket, faas_handler; a, b = socket.socketpair(); "
            "a.sendall(b'GET /?name=x HTTP/1.1\\r\\n\\r\\n'); a.shutdown(socket.SHUT_WR); "
            "print(faas_handler.serve(lambda r: r.arg('name'), sock=b))")
    r = subprocess.run([PYTHON, "-S", "-c", code], cwd=REPO / "sdk" / "python",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "0\n", r.stderr


# --- faas-local-run ---------------------------------------------------------------------

class LocalRun:
    def __init__(self, *command, extra=()):
        self.proc = subprocess.Popen(
            [PYTHON, str(LOCAL_RUN), "--listen", "127.0.0.1:0", *extra, "--", *command],
            stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        self.port = int(m.group(1))

    def request(self, raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    def finish(self, timeout=30):
        rc = self.proc.wait(timeout=timeout)
        return rc, self.proc.stderr.read()


HANDLER = """
import os, sys
sys.path.insert(0, {sdk!r})
from faas_handler import serve
sys.exit(serve(lambda r: (200, {{"X-Env": r.header("x-test", ""),
                                 "X-Timeout": os.environ.get("FAAS_TIMEOUT_MS", ""),
                                 "X-Reuse": os.environ.get("FAAS_REUSE", "")}},
                          f"{{r.method}} {{r.path}} {{r.body.decode()}}")))
"""

# Answers with its pid and how many requests this process has served.
COUNTING_HANDLER = """
import os, sys
sys.path.insert(0, {sdk!r})
from faas_handler import serve
served = []
def handle(request):
    served.append(request.path)
    return f"{{os.getpid()}} {{len(served)}} {{os.environ['FAAS_REUSE']}}"
sys.exit(serve(handle))
"""


def test_local_run_serves_a_python_handler(tmp_path):
    script = tmp_path / "handler.py"
    script.write_text(HANDLER.format(sdk=str(REPO / "sdk" / "python")))
    run = LocalRun(PYTHON, str(script), extra=["--once"])
    raw = run.request(b"POST /p HTTP/1.1\r\nX-Test: 1\r\nContent-Length: 3\r\n\r\nabc")
    status, headers, body = split_response(raw)
    assert (status, headers["X-Env"], body) == (200, "1", b"POST /p abc")
    assert headers["X-Timeout"] == "30000"  # the run timeout, as faasd passes it
    assert headers["X-Reuse"] == "1"  # as faasd passes it by default
    rc, log = run.finish()
    assert rc == 0, log
    assert re.search(r"request 1 from 127\.0\.0\.1:\d+: exit 0 in \d+ ms", log), log


def test_local_run_answers_504_and_502_like_faasd():
    run = LocalRun("sleep", "10", extra=["--once", "--connect-timeout", "300"])
    assert split_response(run.request(b"GET / HTTP/1.1\r\n\r\n"))[::2] == (504,
                                                                           b"Gateway Timeout\n")
    assert "did not connect within 300 ms" in run.finish()[1]
    run = LocalRun("false", extra=["--once"])
    assert split_response(run.request(b"GET / HTTP/1.1\r\n\r\n"))[::2] == (502, b"Bad Gateway\n")
    rc, log = run.finish()
    assert rc == 1 and "exited with 1 before connecting" in log


def test_local_run_kills_a_handler_past_the_run_timeout(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(REPO / 'sdk' / 'python')!r})\n"
                      "import faas_handler\nc = faas_handler.accept()\ntime.sleep(30)\n")
    run = LocalRun(PYTHON, str(script), extra=["--once", "--run-timeout", "500"])
    start = time.monotonic()
    try:
        assert run.request(b"GET / HTTP/1.1\r\n\r\n") == b""
    except ConnectionResetError:
        pass  # killed with the request unread: the kernel resets the connection
    rc, log = run.finish()
    assert time.monotonic() - start < 10 and rc == 128 + 9 and "run timeout" in log, log


def counting_script(tmp_path):
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_HANDLER.format(sdk=str(REPO / "sdk" / "python")))
    return str(script)


def pid_count_reuse(raw: bytes):
    status, _, body = split_response(raw)
    assert status == 200, raw
    pid, count, reuse = body.decode().split()
    return int(pid), int(count), reuse


def test_local_run_reuse_hands_one_handler_its_connections_in_turn(tmp_path):
    run = LocalRun(PYTHON, counting_script(tmp_path), extra=["--once", "--reuse", "3"])
    answers = [pid_count_reuse(run.request(b"GET /%d HTTP/1.1\r\n\r\n" % i)) for i in (1, 2, 3)]
    pid = answers[0][0]
    assert answers == [(pid, 1, "3"), (pid, 2, "3"), (pid, 3, "3")]
    rc, log = run.finish()  # the fourth connect is refused: the handler exits 0
    assert rc == 0, log
    assert re.search(r"request 2 from 127\.0\.0\.1:\d+: served, the handler waits for the next",
                     log), log
    assert re.search(r"request 3 from 127\.0\.0\.1:\d+: exit 0 in \d+ ms", log), log


def test_local_run_once_ends_when_the_handler_serves_fewer(tmp_path):
    run = LocalRun(PYTHON, counting_script(tmp_path),
                   extra=["--once", "--reuse", "3", "--env", "FAAS_REUSE=1"])
    assert pid_count_reuse(run.request(b"GET / HTTP/1.1\r\n\r\n"))[1:] == (1, "1")
    rc, log = run.finish()
    assert rc == 0 and "exit 0" in log, log


def test_local_run_reuse_starts_another_run_after_n(tmp_path):
    run = LocalRun(PYTHON, counting_script(tmp_path), extra=["--reuse", "2"])
    try:
        answers = []
        for i in range(3):
            answers.append(pid_count_reuse(run.request(b"GET / HTTP/1.1\r\n\r\n")))
            # Wait for the handler to connect again (or exit), as a pooled container would.
            while "request %d from" % (i + 1) not in run.proc.stderr.readline():
                pass
        (pid1, n1, _), (pid2, n2, _), (pid3, n3, _) = answers
        assert (pid1 == pid2, n1, n2) == (True, 1, 2)
        assert (pid3 != pid1, n3) == (True, 1)
    finally:
        run.proc.send_signal(signal.SIGINT)
        rc, log = run.finish()
    assert rc == 0, log
