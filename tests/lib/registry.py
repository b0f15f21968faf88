"""Registries for the pull tests, each inside the test's own network namespace:

    Registry        Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1:PORT,
                    anonymous, with htpasswd basic auth, or behind a token server
    TokenServer     the bearer token flow's realm: a small http.server that checks basic
                    credentials and signs JWTs (RS256, x5c) with openssl
    LyingRegistry   a registry written here that answers what a test tells it to: wrong
                    digests, endless bodies, redirect loops, huge manifests, garbage

Images are pushed with `skopeo copy` from the archives tests/lib/images.py builds."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .vm import VM, Spawned, wait_for

HERE = Path(__file__).resolve().parent


# `faas new --image` of a reference the serving version is at already.
ALREADY_RE = re.compile(r"^✓ (\S+) is already at (\S+) \((sha256:[0-9a-f]{64})\)\n\Z")


def _curl_status(vm: VM, url: str) -> str:
    r = vm.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
               check=False)
    return r.stdout.strip()


def wait_http(vm: VM, url: str, proc: Spawned, what: str, timeout: float = 20) -> None:
    """Waits until `url` answers any HTTP status (curl prints 000 while it cannot)."""
    def up():
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n"
                                 f"{proc.stderr_text()[-3000:]}")
        return _curl_status(vm, url) not in ("", "000")
    wait_for(up, timeout, what=f"{what} to answer {url}")


class Registry:
    """docker-registry serving CONFIG from `work` on 127.0.0.1:port in the VM."""

    def __init__(self, vm: VM, work: Path, port: int = 5000, htpasswd: Optional[tuple] = None,
                 token: Optional[dict] = None, addr: str = "127.0.0.1",
                 tls: Optional[tuple] = None):
        self.vm = vm
        self.port = port
        self.host = f"{addr}:{port}"
        self.creds = htpasswd
        work.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(work / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if tls is not None:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if htpasswd is not None:
            user, password = htpasswd
            subprocess.run(["htpasswd", "-B", "-b", "-c", str(work / "htpasswd"), user, password],
                           check=True, capture_output=True)
            config["auth"] = {"htpasswd": {"realm": "faasd-test", "path": str(work / "htpasswd")}}
        if token is not None:
            config["auth"] = {"token": token}
        # JSON is YAML.
        (work / "config.yml").write_text(json.dumps(config))
        self.proc = vm.spawn(["docker-registry", "serve", str(work / "config.yml")],
                             log_name="registry")
        wait_http(vm, f"http://{self.host}/v2/", self.proc, "docker-registry")

    def push(self, archive: str, repo_tag: str, creds: Optional[tuple] = None,
             compression: str = "") -> str:
        """Copies a docker-archive into the registry as REPO:TAG (layers compressed with
        `compression`, e.g. zstd; default gzip); returns the manifest digest the
        registry stores."""
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false"]
        if compression:
            argv += ["--format", "oci", f"--dest-compress-format={compression}"]
        if creds is not None:
            argv.append(f"--dest-creds={creds[0]}:{creds[1]}")
        self.vm.run(argv + [f"docker-archive:{archive}", f"docker://{self.host}/{repo_tag}"],
                    timeout=120)
        return self.digest(repo_tag, creds)

    def push_oci(self, layout: str, ref_name: str, repo_tag: str) -> None:
        """Copies image `ref_name` of an OCI layout, every platform of its index, as
        REPO:TAG."""
        self.vm.run(["skopeo", "copy", "-q", "--all", "--dest-tls-verify=false",
                     f"oci:{layout}:{ref_name}", f"docker://{self.host}/{repo_tag}"],
                    timeout=120)

    def digest(self, repo_tag: str, creds: Optional[tuple] = None) -> str:
        argv = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
        if creds is not None:
            argv.append(f"--creds={creds[0]}:{creds[1]}")
        raw = self.vm.run(argv + [f"docker://{self.host}/{repo_tag}"], text=False).stdout_bytes
        return "sha256:" + hashlib.sha256(raw).hexdigest()


def make_server_cert(work: Path, ip: str) -> tuple:
    """A self-signed certificate for `ip` (its own CA) and its key: (cert, key) paths."""
    key, cert = work / "server.key", work / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def make_signing_cert(work: Path) -> tuple:
    """A self-signed RSA certificate and its key for signing tokens: (cert, key) paths."""
    key, cert = work / "token.key", work / "token.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=faasd-test-token", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class TokenServer:
    """tests/lib/token_server.py on 127.0.0.1:port in the VM."""

    def __init__(self, vm: VM, work: Path, creds: tuple, port: int = 5001):
        self.cert, self.key = make_signing_cert(work)
        self.realm = f"http://127.0.0.1:{port}/token"
        self.log = work / "token-requests.log"
        self.proc = vm.spawn([sys.executable, str(HERE / "token_server.py"), str(port),
                              str(self.cert), str(self.key), creds[0], creds[1], str(self.log)],
                             log_name="token-server")
        wait_http(vm, self.realm, self.proc, "the token server")

    def registry_auth(self) -> dict:
        return {"realm": self.realm, "service": "faasd-test-registry",
                "issuer": "faasd-test-issuer", "rootcertbundle": str(self.cert)}

    def requests(self) -> list:
        return self.log.read_text().splitlines() if self.log.exists() else []


class LyingRegistry:
    """tests/lib/lying_registry.py on 127.0.0.1:port in the VM, serving the documents
    and blobs of `spec` (see that file) the way `spec` says."""

    def __init__(self, vm: VM, work: Path, spec: dict, port: int = 5002):
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"lying-{port}.json"
        path.write_text(json.dumps(spec))
        self.host = f"127.0.0.1:{port}"
        self.proc = vm.spawn([sys.executable, str(HERE / "lying_registry.py"), str(port),
                              str(path)], log_name="lying-registry")
        wait_http(vm, f"http://{self.host}/v2/", self.proc, "the lying registry")


def auth_file(path: Path, entries: dict) -> str:
    """A docker config.json with basic credentials per host: {host: (user, password)}."""
    auths = {host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
             for host, (u, p) in entries.items()}
    path.write_text(json.dumps({"auths": auths}))
    return str(path)
