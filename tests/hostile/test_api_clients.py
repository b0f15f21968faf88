"""Hostile and unlucky clients of the control API: a flood of idle TCP connections,
deploys queued behind slow uploads, clients that hang up or trickle, DNS rebinding
against the token-less loopback listener."""

from __future__ import annotations

import json
import time

import pytest

from hostile_lib import apiclient, assert_flood_shed, raw, start_flood
from lib.vm import wait_for

pytestmark = pytest.mark.integration

PORT = 8080
TOKEN = "s3cret-token"
# The short header deadline of a TCP connection before its first authorized request.
FIRST_HEADER_SECONDS = 5
TCP_CAP = 64


def start_with_token(vm, faasd, *extra):
    token_file = f"{vm.run_dir}/token"
    vm.write_file(token_file, (TOKEN + "\n").encode())
    faasd.start("--listen-tcp", f"127.0.0.1:{PORT}", "--token-file", token_file, *extra)


def tcp_faas(faasd, *args, token=TOKEN):
    return faasd.vm.run([faasd.faas_bin, "--url", f"http://127.0.0.1:{PORT}", "--token", token,
                         *args], check=False, timeout=60)


def assert_no_function(faas, faasd, name):
    assert name not in faas.read_registry(missing_ok=True)
    assert name not in faas.list_handlers()
    assert name not in faas.vm.listdir(f"{faasd.state_dir}/images")
    r = faasd.faas("ip", name)
    assert r.returncode == 1 and "no function" in r.stderr, r


# --- 1. TCP clients cannot lock root out ------------------------------------------------

def test_idle_tcp_flood_does_not_starve_unix_socket_and_is_shed_fast(faas_unstarted,
                                                                    faasd_unstarted, vm):
    """Hundreds of idle, unauthenticated TCP connections (more than the TCP cap, and
    more than the old shared cap of 256) must not take the unix socket's connections,
    and each is closed within the short first-header deadline."""
    faasd = faasd_unstarted
    start_with_token(vm, faasd)
    count = 300
    flood = start_flood(vm, faasd, "127.0.0.1", PORT, count, "TCP")

    started = time.monotonic()
    r = faasd.faas("list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r
    assert time.monotonic() - started < 3, "the unix socket waited behind the TCP flood"
    d = faas_unstarted.deploy_handler("fn")
    assert faasd.faas("ip", "fn").stdout.strip() == d.ip

    assert_flood_shed(flood, count, FIRST_HEADER_SECONDS, TCP_CAP)
    # With the flood gone, an authorized TCP client is served; a keep-alive request
    # with a wrong token gets a 401 and the connection closed at once.
    r = tcp_faas(faasd, "ip", "fn")
    assert r.returncode == 0 and r.stdout.strip() == d.ip, r
    out = raw(vm, f"127.0.0.1:{PORT}", "GET /api/list HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
              "Authorization: Bearer wrong\\r\\n\\r\\n")
    assert out["closed"] and out["elapsed"] < 2, out
    assert out["reply"].startswith("HTTP/1.1 401 "), out
    assert '{"error":"missing or wrong bearer token"}' in out["reply"], out


# --- 2. a deploy's client gets its real outcome ----------------------------------------

class HeldUpload:
    """An upload that trickles its image (1 KiB every 100 ms) until release(), then
    sends the rest: it holds an import worker for as long as the test wants, while
    staying inside any idle timeout."""

    def __init__(self, faas, name: str, handler: str = "hello"):
        vm, faasd = faas.vm, faas.faasd
        self.vm = vm
        self.release_file = f"{vm.run_dir}/release-{name}"
        started = f"deploy of {name} started"
        seen = faasd.log().count(started)
        self.proc = vm.spawn(["/usr/bin/python3", apiclient(vm), "deploy", faasd.socket, name,
                              faas.image(handler), "--trickle-until", self.release_file],
                             log_name=f"held-{name}")
        wait_for(lambda: faasd.log().count(started) > seen, 15,
                 what=f"faasd to start the deploy of {name}")

    def release(self) -> None:
        self.vm.write_file(self.release_file, b"")

    def result(self, timeout: float = 120) -> dict:
        assert self.proc.wait(timeout) == 0, self.proc.stderr_text()
        return json.loads(self.proc.stdout_text())


def deploy_client(faas, name, *args, handler="hello"):
    vm = faas.vm
    return vm.spawn(["/usr/bin/python3", apiclient(vm), "deploy", faas.faasd.socket, name,
                     faas.image(handler), *args], log_name=f"deploy-{name}")


@pytest.mark.faasd_args("--api-timeout", "1s")
def test_deploy_queued_behind_two_slow_uploads_gets_its_real_answer(faas, faasd):
    """Regression: the idle timer ran while a deploy waited for one of the two import
    workers, so the client got an empty reply and the deploy committed later anyway."""
    first, second = HeldUpload(faas, "slow1"), HeldUpload(faas, "slow2")
    third = deploy_client(faas, "queued")
    wait_for(lambda: "deploy of queued started" in faasd.log(), 15, what="the third deploy")
    # Three idle timeouts with the whole image sent and both workers busy. What is
    # checked is that nothing happens meanwhile, so there is no condition to wait for.
    time.sleep(3)
    assert third.poll() is None, f"the queued deploy was answered early: {third.stdout_text()}"
    assert "queued" not in faas.read_registry(missing_ok=True)
    first.release()
    second.release()
    assert third.wait(60) == 0, third.stderr_text()
    out = json.loads(third.stdout_text())
    assert out["status"] == 200, out
    ip = json.loads(out["body"])["ip"]
    assert faasd.faas("ip", "queued").stdout.strip() == ip
    faas.assert_handler_responds(ip)
    for held, name in ((first, "slow1"), (second, "slow2")):
        res = held.result()
        assert res["status"] == 200, res
        faas.assert_handler_responds(json.loads(res["body"])["ip"])


@pytest.mark.faasd_args("--api-timeout", "1s")
def test_client_hanging_up_while_queued_commits_nothing(faas, faasd):
    """A client that sent its whole image and hung up while its deploy waited for a
    worker is told nothing, so nothing may be deployed: no function, no version, no
    address, no image directory."""
    first, second = HeldUpload(faas, "slow1"), HeldUpload(faas, "slow2")
    gone = deploy_client(faas, "gone", "--hangup")
    assert gone.wait(30) == 0, gone.stderr_text()
    assert json.loads(gone.stdout_text())["sent"] is not None
    wait_for(lambda: "the client of the deploy of gone is gone" in faasd.log(), 15,
             what="faasd to notice the hang-up")
    first.release()
    second.release()
    for held in (first, second):
        assert held.result()["status"] == 200
    wait_for(lambda: "deploy of gone failed" in faasd.log(), 30, what="the deploy to end")
    assert_no_function(faas, faasd, "gone")
    assert len(faasd.faas_addresses()) == 2
    assert sorted(faas.vm.listdir(f"{faasd.state_dir}/images")) == ["slow1", "slow2"]
    assert faas.vm.listdir(f"{faasd.state_dir}/tmp") == []
    # The name is free again.
    d = faas.deploy_handler("gone")
    faas.assert_handler_responds(d.ip)


@pytest.mark.faasd_args("--api-timeout", "1s")
def test_slow_but_moving_upload_succeeds(faas, faasd):
    """1 KiB every 100 ms for three idle timeouts: the upload is slow, not idle.
    Regression: the timer was armed per 256 KiB chunk."""
    client = deploy_client(faas, "trickle", "--trickle-seconds", "3.5")
    assert client.wait(60) == 0, client.stderr_text()
    out = json.loads(client.stdout_text())
    assert out["status"] == 200 and out["elapsed"] > 3.5, out
    faas.assert_handler_responds(json.loads(out["body"])["ip"])


@pytest.mark.faasd_args("--api-timeout", "1s")
def test_silent_upload_is_cut_off_by_the_idle_timeout(faas, faasd):
    """The idle timeout still applies to a client that sends nothing at all."""
    client = deploy_client(faas, "silent", "--stall-after", "20000")
    assert client.wait(30) == 0, client.stderr_text()
    out = json.loads(client.stdout_text())
    assert out["closed_without_answer"] and out["elapsed"] < 5, out
    wait_for(lambda: "deploy of silent failed" in faasd.log(), 30, what="the deploy to fail")
    assert_no_function(faas, faasd, "silent")
    assert faasd.faas_addresses() == []


# --- 3. the token-less loopback listener ------------------------------------------------

def curl_tcp(vm, path, host=None):
    argv = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
    if host is not None:
        argv += ["-H", f"Host: {host}"]
    r = vm.run(argv + [f"http://127.0.0.1:{PORT}{path}"])
    text, _, code = r.stdout.rpartition("\n")
    return int(code), text


@pytest.mark.faasd_args("--listen-tcp", f"127.0.0.1:{PORT}")
def test_tokenless_tcp_warns_at_start(faasd):
    warnings = [line for line in faasd.log().splitlines()
                if "without a token" in line and f"127.0.0.1:{PORT}" in line]
    assert len(warnings) == 1, faasd.log()
    assert "warn" in warnings[0].lower(), warnings


@pytest.mark.faasd_args("--listen-tcp", f"127.0.0.1:{PORT}")
def test_tokenless_tcp_refuses_foreign_host_header(faas, faasd, vm):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 must
    not reach the API (its requests carry Host: evil.example)."""
    faas.deploy_handler("fn", "hello")
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1.evil.example",
                 "localhost.evil.example", "10.0.0.10"):
        status, text = curl_tcp(vm, "/api/list", host)
        assert status == 403, (host, status, text)
        assert set(json.loads(text)) == {"error"}, text
        assert "fn" not in text
    for host in (None, "localhost", f"localhost:{PORT}", "127.0.0.1", f"127.0.0.1:{PORT}"):
        status, text = curl_tcp(vm, "/api/list", host)
        assert status == 200 and "fn" in json.loads(text), (host, status, text)
    # The CLI over TCP (Host: 127.0.0.1:PORT) keeps working, and so does the unix socket.
    r = vm.run([faasd.faas_bin, "--url", f"http://127.0.0.1:{PORT}", "ip", "fn"], check=False)
    assert r.returncode == 0, r
    assert faasd.faas("ip", "fn").returncode == 0
    # A request without any Host is refused too.
    out = raw(vm, f"127.0.0.1:{PORT}", "GET /api/list HTTP/1.0\\r\\n\\r\\n")
    assert out["reply"].startswith("HTTP/1.1 403 "), out


def test_token_tcp_accepts_any_host(faas_unstarted, faasd_unstarted, vm):
    """With a token the Host is not checked (a remote name is fine there)."""
    start_with_token(vm, faasd_unstarted)
    out = raw(vm, f"127.0.0.1:{PORT}",
              f"GET /api/list HTTP/1.1\\r\\nHost: faasd.example\\r\\n"
              f"Authorization: Bearer {TOKEN}\\r\\nConnection: close\\r\\n\\r\\n")
    assert out["reply"].startswith("HTTP/1.1 200 "), out
