"""A registry that answers what a test says, to check how faasd's pulls take hostile
or broken registries:

    lying_registry.py PORT SPEC.json

SPEC is {"routes": {PATH: ROUTE}}; GET /v2/ answers 200 {} unless a route says
otherwise, any other path 404 with a registry error. A key "METHOD PREFIX" (e.g.
"PUT /v2/app/manifests/") answers that method on every path that starts with PREFIX
(query string left out; the longest prefix wins); a request body is read first.
A ROUTE is an object:

    status        the status (default 200)
    headers       {name: value} added to the answer
    body_b64      the body (base64)
    endless       true: after the body, zero bytes forever (chunked)
    trickle       true: after the headers, one byte every 5 s (no Content-Length)
    redirect      a path: a 302 to it (a route redirecting to itself is a loop)

Each request is appended to SPEC.requests as its path (a method other than GET
before it: "PUT /v2/...")."""

import base64
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SPEC = sys.argv[1], sys.argv[2]
with open(SPEC) as f:
    ROUTES = json.load(f)["routes"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._answer("HEAD")

    def do_POST(self):
        self._answer("POST")

    def do_PUT(self):
        self._answer("PUT")

    def do_PATCH(self):
        self._answer("PATCH")

    def do_GET(self):
        self._answer("GET")

    def _route(self, method: str):
        path = self.path.split("?", 1)[0]
        prefixed = [k for k in ROUTES if k.startswith(method + " ")
                    and path.startswith(k.split(" ", 1)[1])]
        if prefixed:
            return ROUTES[max(prefixed, key=len)]
        return ROUTES.get(self.path) if method == "GET" else None

    def _answer(self, method: str):
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            length -= len(self.rfile.read(min(length, 1 << 16)) or b"x" * length)
        with open(SPEC + ".requests", "a") as log:
            log.write((self.path if method == "GET" else f"{method} {self.path}") + "\n")
        route = self._route(method)
        if route is None and self.path == "/v2/" and method == "GET":
            route = {"body_b64": base64.b64encode(b"{}").decode()}
        if route is None:
            body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})
            route = {"status": 404, "body_b64": base64.b64encode(body.encode()).decode()}
        if "redirect" in route:
            self.send_response(302)
            self.send_header("Location", route["redirect"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = base64.b64decode(route.get("body_b64", ""))
        self.send_response(route.get("status", 200))
        for name, value in route.get("headers", {}).items():
            self.send_header(name, value)
        if method == "HEAD":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return
        try:
            if route.get("endless"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._chunk(body)
                zeros = bytes(64 * 1024)
                while True:
                    self._chunk(zeros)
            if route.get("trickle"):
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    self.wfile.write(b"{")
                    self.wfile.flush()
                    time.sleep(5)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, data: bytes):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
