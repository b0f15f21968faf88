"""The realm of a registry's bearer token flow, for tests:

    token_server.py PORT CERT KEY USER PASSWORD LOG

GET /token?service=S&scope=repository:NAME:pull with basic credentials USER:PASSWORD
answers {"token": JWT} (RS256, the certificate in the x5c header, as CNCF distribution
checks it against its rootcertbundle); other credentials, or none, get a 401. Each
request is logged to LOG as one line: "ok" or "refused" and the scope (never the
credentials)."""

import base64
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, CERT, KEY, USER, PASSWORD, LOG = sys.argv[1:7]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der() -> str:
    pem = open(CERT).read()
    body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return "".join(body.split())


def make_token(service: str, scope: str) -> str:
    header = {"typ": "JWT", "alg": "RS256", "x5c": [cert_der()]}
    access = []
    parts = scope.split(":")
    if len(parts) == 3 and parts[0] == "repository":
        access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
    now = int(time.time())
    claims = {"iss": "faasd-test-issuer", "sub": USER, "aud": service, "exp": now + 300,
              "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY],
                               input=signing_input.encode(), capture_output=True,
                               check=True).stdout
    return signing_input + "." + b64url(signature)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        scope = query.get("scope", [""])[0]
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        ok = url.path == "/token" and self.headers.get("Authorization") == expected
        with open(LOG, "a") as log:
            log.write(f"{'ok' if ok else 'refused'} {scope}\n")
        if not ok:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"token": make_token(query.get("service", [""])[0], scope)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
