"""FaaSTestHelper: the verbs tests use (deploy, request, inspect, assert), all going
through the VM. Obtain one with the `faas` fixture (tests/conftest.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from .daemon import LABEL, LIB_DIR, Faasd
from .images import ImageBuilder
from .vm import VM, RunResult, Spawned, wait_for

HELLO_BODY = "Hello from FaaS handler!\n\nRequest: {line}\n"
DEPLOYED_RE = re.compile(r"^✓ Deployed (\S+) at (\d+\.\d+\.\d+\.\d+)\n  Command: (.*)\n"
                         r"(?:  Kept from (v\d+: .*)\n)?\Z")


SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def parse_samples(text: str) -> dict:
    """{'name{labels}': value} of every sample line of a Prometheus exposition."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def hello_body(method: str = "GET", path: str = "/") -> str:
    """The exact body tests/handlers/hello (and python-hello) answer."""
    return HELLO_BODY.format(line=f"{method} {path} HTTP/1.1")


@dataclass
class Deployed:
    name: str
    ip: Optional[str]
    command: Optional[list]
    result: RunResult
    kept: Optional[str] = None  # "v3: env (2), memory": the settings a redeploy kept

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0


class FaaSTestHelper:
    def __init__(self, vm: VM, faasd: Faasd, images: ImageBuilder):
        self.vm = vm
        self.faasd = faasd
        self.images = images
        self.client = vm.import_file(str(LIB_DIR / "client.py"))

    # --- images -------------------------------------------------------------------
    def image(self, handler: str, fmt: str = "docker-archive") -> str:
        """Path inside the VM of the archive of `handler` (built and cached on demand)."""
        return self.vm.import_file(str(self.images.archive(handler, fmt)))

    def put_archive(self, data: bytes, name: str = "crafted.tar") -> str:
        """Writes crafted archive bytes into the VM; returns the path."""
        path = f"{self.vm.run_dir}/{name}"
        self.vm.write_file(path, data)
        return path

    # --- deploy / list / ip / rm ----------------------------------------------------
    def deploy_handler(self, name: str, handler: str = "hello", fmt: str = "docker-archive",
                       archive: Optional[str] = None, check: bool = True,
                       options: Sequence[str] = ()) -> Deployed:
        """`faas new NAME [options] < archive`. With check, asserts success and the
        exact output. `options` are `faas new` flags, e.g. ("--warm", "2")."""
        path = archive if archive is not None else self.image(handler, fmt)
        r = self.faasd.faas("new", name, *options, stdin_path=path)
        if not check:
            return Deployed(name, None, None, r)
        assert r.returncode == 0, f"deploy of {name} failed: {r}\n--- faasd log ---\n{self.faasd.log()[-3000:]}"
        m = DEPLOYED_RE.match(r.stdout)
        assert m, f"unexpected `faas new` output: {r.stdout!r}"
        assert m.group(1) == name
        return Deployed(name, m.group(2), json.loads(m.group(3)), r, m.group(4))

    def get_handler_ip(self, name: str) -> str:
        r = self.faasd.faas("ip", name, check=True)
        ip = r.stdout.strip()
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", ip), f"`faas ip {name}` printed {r.stdout!r}"
        return ip

    def list_handlers(self) -> dict:
        """`faas list --json`: the registry object as faasd returns it."""
        r = self.faasd.faas("list", "--json", check=True)
        return json.loads(r.stdout)

    def list_table(self) -> list:
        """`faas list` rows as [name, ip, command...] word lists, header first."""
        r = self.faasd.faas("list", check=True)
        return [line.split() for line in r.stdout.splitlines()]

    def remove_handler(self, name: str, check: bool = True) -> RunResult:
        return self.faasd.faas("rm", name, check=check)

    def describe(self, name: str) -> dict:
        """`faas describe NAME`: the function's record, with its live "runtime" object."""
        r = self.faasd.faas("describe", name, check=True)
        return json.loads(r.stdout)

    def runtime(self, name: str) -> dict:
        """The "runtime" object of `faas describe NAME`: pool sizes and counters."""
        record = self.describe(name)
        assert "runtime" in record, f"`faas describe {name}` has no runtime object: {record}"
        return record["runtime"]

    def wait_runtime(self, name: str, condition, timeout: float = 20, what: str = "") -> dict:
        """Polls runtime(name) until condition(runtime) holds; returns that runtime."""
        last = {}

        def check():
            last["rt"] = self.runtime(name)
            return last["rt"] if condition(last["rt"]) else None

        try:
            return wait_for(check, timeout, what=what or f"the runtime of {name}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last runtime of {name}: {last.get('rt')}\n"
                                 f"--- faasd log ---\n{self.faasd.log()[-3000:]}") from None

    def wait_pool_ready(self, name: str, count: int, timeout: float = 20) -> dict:
        """Waits until `name` has exactly `count` ready pooled containers, none starting
        and no request running; returns the runtime."""
        return self.wait_runtime(
            name, lambda rt: (rt["pool_ready"] == count and rt["pool_starting"] == 0
                              and rt["active"] == 0),
            timeout, what=f"{count} ready pooled container(s) of {name}")

    def read_registry(self, missing_ok: bool = False) -> dict:
        """STATE/registry.json; {} when it does not exist yet and missing_ok."""
        path = f"{self.faasd.state_dir}/registry.json"
        if missing_ok and not self.vm.exists(path):
            return {}
        return json.loads(self.vm.read_file(path))

    # --- requests -------------------------------------------------------------------
    def _client_argv(self, ip: str, count: int, concurrency: int, path: str,
                     method: Optional[str], body: Optional[str], body_size: int,
                     timeout: float, port: int, keep_body: int) -> list:
        argv = ["/usr/bin/python3", self.client, ip, "--port", str(port), "--path", path,
                "-n", str(count), "-c", str(concurrency), "--timeout", str(timeout),
                "--keep-body", str(keep_body)]
        if method:
            argv += ["--method", method]
        if body is not None:
            argv += ["--body", body]
        if body_size:
            argv += ["--body-size", str(body_size)]
        return argv

    def make_requests(self, ip: str, count: int = 1, concurrency: int = 1, path: str = "/",
                      method: Optional[str] = None, body: Optional[str] = None,
                      body_size: int = 0, timeout: float = 30, port: int = 80,
                      keep_body: int = 65536) -> list:
        """Runs tests/lib/client.py inside the VM; returns its per-request results."""
        argv = self._client_argv(ip, count, concurrency, path, method, body, body_size,
                                 timeout, port, keep_body)
        r = self.vm.run(argv, timeout=timeout * max(1, count // max(1, concurrency)) + 60)
        return json.loads(r.stdout)["results"]

    def start_requests(self, ip: str, count: int = 1, concurrency: int = 1, path: str = "/",
                       method: Optional[str] = None, body: Optional[str] = None,
                       body_size: int = 0, timeout: float = 30, port: int = 80,
                       keep_body: int = 65536, log_name: str = "client") -> "Requests":
        """make_requests() in the background: returns at once; .results() waits."""
        argv = self._client_argv(ip, count, concurrency, path, method, body, body_size,
                                 timeout, port, keep_body)
        return Requests(self.vm.spawn(argv, log_name=log_name),
                        timeout * max(1, count // max(1, concurrency)) + 60)

    def make_request(self, ip: str, **kw) -> dict:
        return self.make_requests(ip, count=1, **kw)[0]

    def assert_handler_responds(self, ip: str, expected_body: Optional[str] = None,
                                **kw) -> dict:
        """One request to ip; asserts a complete 200 answer with exactly expected_body
        (default: the hello handler's answer to GET /)."""
        if expected_body is None:
            expected_body = hello_body(kw.get("method") or ("POST" if kw.get("body") else "GET"),
                                       kw.get("path", "/"))
        r = self.make_request(ip, **kw)
        assert r["status"] == 200 and r["complete"], \
            f"no complete 200 answer from {ip}: {r}\n--- faasd log ---\n{self.faasd.log()[-3000:]}"
        assert r["body"] == expected_body
        return r

    # --- state checks ---------------------------------------------------------------
    def check_ip_configured(self, ip: str) -> bool:
        return any(a["local"] == ip for a in self.faasd.addresses())

    def check_ip_has_label(self, ip: str, label: str = LABEL) -> bool:
        return any(a["local"] == ip and a["label"] == label for a in self.faasd.addresses())

    def check_rootfs_exists(self, name: str) -> bool:
        return self.vm.exists(f"{self.faasd.state_dir}/images/{name}/rootfs")

    def count_bundles(self) -> int:
        return len(self.faasd.bundles())

    def get_process_count(self) -> int:
        """Processes belonging to the running faasd, itself excluded (0 when idle)."""
        return len(self.faasd.related_processes())

    def stat(self, *paths: str) -> dict:
        r = self.vm.run(["/usr/bin/python3", self.faasd.vmtools, "stat", *paths])
        return json.loads(r.stdout)

    def stat_tree(self, root: str) -> dict:
        """stat() of `root` and of every path under it, keyed by path."""
        r = self.vm.run(["/usr/bin/python3", self.faasd.vmtools, "stat-tree", root])
        return json.loads(r.stdout)

    def tree(self, path: str) -> list:
        r = self.vm.run(["/usr/bin/python3", self.faasd.vmtools, "tree", path])
        return json.loads(r.stdout)

    def wait_for_cleanup(self, condition=None, timeout: float = 20, what: str = "cleanup"):
        """Polls `condition` (default: faasd has no request leftovers) until true."""
        if condition is None:
            return self.faasd.wait_idle(timeout)
        return wait_for(condition, timeout, what=what)

    # --- assertions -----------------------------------------------------------------
    def assert_ip_configured(self, ip: str, label: str = LABEL, prefixlen: int = 24) -> None:
        addrs = self.faasd.addresses()
        match = [a for a in addrs if a["local"] == ip]
        assert match, f"{ip} is not on lo: {addrs}"
        assert match[0]["label"] == label and match[0]["prefixlen"] == prefixlen, match[0]

    def assert_rootfs_exists(self, name: str, handler_file: str = "handler") -> None:
        root = f"{self.faasd.state_dir}/images/{name}/rootfs"
        assert self.vm.exists(root), f"{root} missing"
        if handler_file:
            assert self.vm.exists(f"{root}/{handler_file}"), f"{root}/{handler_file} missing"

    def assert_bundles_cleaned_up(self, timeout: float = 20) -> None:
        wait_for(lambda: self.count_bundles() == 0, timeout,
                 what=f"{self.faasd.state_dir}/bundles to be empty")
        self.faasd.wait_idle(timeout)


class Requests:
    """Requests running in the background (FaaSTestHelper.start_requests)."""

    def __init__(self, proc: Spawned, timeout: float):
        self.proc = proc
        self.timeout = timeout

    def done(self) -> bool:
        return self.proc.poll() is not None

    def results(self) -> list:
        """Waits for the client to finish; returns its per-request results."""
        rc = self.proc.wait(self.timeout)
        assert rc == 0, f"client exited {rc}: {self.proc.stderr_text()[-3000:]}"
        return json.loads(self.proc.stdout_text())["results"]


class SlowUpload:
    """A deploy whose upload stays in progress until finish() or abort(): curl streams
    the image (chunked) from a FIFO that a `sleep` holds open after writing `head_bytes`
    of the archive. Lets tests act while faasd is in the middle of a deploy."""

    def __init__(self, helper: "FaaSTestHelper", name: str, handler: str = "hello",
                 head_bytes: int = 65536):
        self.helper = helper
        vm, faasd = helper.vm, helper.faasd
        self.name = name
        self.fifo = f"{vm.run_dir}/upload-{name}.fifo"
        self.out = f"{vm.run_dir}/upload-{name}.out"
        vm.run(["mkfifo", self.fifo])
        image = helper.image(handler)
        started = f"deploy of {name} started"
        seen = faasd.log().count(started)
        self.writer = vm.spawn(f"exec > {self.fifo}; head -c {head_bytes} {image}; exec sleep 600",
                               log_name=f"upload-writer-{name}")
        self.uploader = vm.spawn(
            ["curl", "-sS", "-o", self.out, "-w", "%{http_code}", "--unix-socket", faasd.socket,
             "-X", "POST", "-H", f"X-Image-Name: {name}", "-H", "Transfer-Encoding: chunked",
             "-T", self.fifo, "http://faasd/api/new"], log_name=f"upload-{name}")
        wait_for(lambda: faasd.log().count(started) > seen, 15,
                 what=f"faasd to start the deploy of {name}")

    def finish(self, timeout: float = 30):
        """Ends the body early (EOF after head_bytes); returns (http status, body)."""
        self.writer.kill(9)
        self.writer.wait(timeout)
        assert self.uploader.wait(timeout) == 0, self.uploader.stderr_text()
        body = self.helper.vm.read_file(self.out).decode()
        return int(self.uploader.stdout_text()), json.loads(body)

    def abort(self, timeout: float = 30) -> None:
        """The client goes away mid-upload."""
        self.uploader.kill(9)
        self.uploader.wait(timeout)
        self.writer.kill(9)
        self.writer.wait(timeout)
