"""Helpers of the hostile tests (tests/hostile): hostile handlers, malicious archives
and crashes. They build on the fixtures of tests/conftest.py (`vm`, `faasd`, `faas`):

    deploy(faas, name, handler, *options)   `faas new [options] NAME`, exact output checked
    request_outcomes(faasd, name)           outcomes of NAME's finished requests (log)
    assert_closed_without_answer(result)    the client got no byte, just a close/reset
    start_in_open_parent(faasd, *args)      starts faasd after opening up the state dir's
                                            parent the way /var/lib is
    Bystander (fixture `bystander`)         a hello function deployed next to the hostile
                                            one; .assert_unharmed() checks faasd after an
                                            attack: /healthz, hello answers, no bundle,
                                            runc container, cgroup or process left, and
                                            faasd's fd table as at .mark()
    apiclient(vm)                           path in the VM of tests/lib/apiclient.py
    raw(vm, "HOST:PORT", request)           one raw HTTP exchange with apiclient.py
    start_flood(...), assert_flood_shed(...) idle connections to an API listener past its
                                            cap, and how soon faasd closed them
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

from lib.daemon import LIB_DIR
from lib.helpers import DEPLOYED_RE, Deployed, FaaSTestHelper
from lib.vm import wait_for


def apiclient(vm) -> str:
    return vm.import_file(str(LIB_DIR / "apiclient.py"))


def start_flood(vm, faasd, host: str, port: int, count: int, listener: str):
    """Opens `count` idle connections to HOST:PORT (apiclient.py flood, watched for 30 s)
    and returns its process once faasd logged that its `listener` socket is full."""
    ready = f"{vm.run_dir}/flood-ready"
    flood = vm.spawn(["/usr/bin/python3", apiclient(vm), "flood", host, str(port), str(count),
                      ready, "30"], log_name="flood")
    wait_for(lambda: vm.run(["test", "-e", ready], check=False).returncode == 0, 30,
             what="the flood to open its connections")
    wait_for(lambda: f"connections open on the {listener} socket, refusing more" in faasd.log(),
             10, what=f"the {listener} cap to be reached")
    return flood


def assert_flood_shed(flood, count: int, deadline: float, cap: int) -> None:
    """Every connection of the flood was closed within `deadline` s (and some slack),
    and no more than `cap` of them were held past 1 s."""
    assert flood.wait(60) == 0, flood.stderr_text()
    result = json.loads(flood.stdout_text())
    assert result["opened"] == count and result["open_errors"] == 0, result
    lifetimes = result["lifetimes"]
    assert None not in lifetimes, f"connections left open after 30 s: {lifetimes}"
    assert max(lifetimes) < deadline + 3, sorted(lifetimes)[-10:]
    held = [t for t in lifetimes if t > 1]
    assert len(held) <= cap, f"{len(held)} connections held past 1 s"


def raw(vm, where, request, timeout=10) -> dict:
    """Sends `request` (\\r\\n escapes allowed) to `where` and reads until close."""
    r = vm.run(["/usr/bin/python3", apiclient(vm), "raw", where, request, str(timeout)],
               timeout=timeout + 30)
    return json.loads(r.stdout)


def deploy(faas: FaaSTestHelper, name: str, handler: str, *options: str,
           archive: Optional[str] = None) -> Deployed:
    """`faas new [options] NAME < image`; asserts success and the exact output."""
    path = archive if archive is not None else faas.image(handler)
    r = faas.faasd.faas("new", *options, name, stdin_path=path)
    assert r.returncode == 0, f"deploy of {name} failed: {r}\n{faas.faasd.log()[-3000:]}"
    m = DEPLOYED_RE.match(r.stdout)
    assert m and m.group(1) == name, f"unexpected `faas new` output: {r.stdout!r}"
    return Deployed(name, m.group(2), json.loads(m.group(3)), r)


def start_in_open_parent(faasd, *args: str) -> None:
    """On a real host the state dir sits in /var/lib, whose parents anyone may traverse;
    the sandbox's base directory is 0700, so it is opened up like /var/lib first. Then
    starts faasd with `args`."""
    faasd.vm.run(["chmod", "0755", os.path.dirname(faasd.state_dir)])
    faasd.start(*args)


def request_outcomes(faasd, name: str) -> list:
    """The outcome of every finished request of `name`, from faasd's log lines
    `request NAME ID: OUTCOME in N ms`."""
    return re.findall(rf"request {re.escape(name)} faas-[0-9a-f]+-\d+: (.*) in \d+ ms",
                      faasd.log())


def request_ids(faasd, name: str) -> list:
    return re.findall(rf"request {re.escape(name)} (faas-[0-9a-f]+-\d+): ", faasd.log())


def assert_closed_without_answer(r: dict) -> None:
    assert r["status"] is None and r["raw_len"] == 0, f"expected a closed connection: {r}"
    assert r["error"] is None or "ConnectionReset" in r["error"], r


def answer_lines(r: dict) -> dict:
    """A complete 200 answer of `key=value` lines, as a dict."""
    assert r["status"] == 200 and r["complete"], f"no complete 200 answer: {r}"
    return dict(line.split("=", 1) for line in r["body"].splitlines())


class Bystander:
    """A hello function deployed before the attack; checks faasd survived it."""

    def __init__(self, faas: FaaSTestHelper):
        self.faas = faas
        self.faasd = faas.faasd
        self.hello = faas.deploy_handler("hello")
        # Lazily created fds (epoll, timers, the pool's) exist after a few requests.
        for _ in range(2):
            faas.assert_handler_responds(self.hello.ip)
        faas.wait_for_cleanup()
        self.fds_before = self.faasd.fds()

    def mark(self) -> None:
        """Takes faasd's fd table as the reference: call it once the hostile function is
        deployed (its listener adds two fds)."""
        self.fds_before = self.faasd.fds()

    @property
    def ip(self) -> str:
        return self.hello.ip

    def assert_unharmed(self, timeout: float = 30) -> None:
        faas, faasd = self.faas, self.faasd
        assert faasd.running(), f"faasd died: {faasd.log()[-3000:]}"
        faas.wait_for_cleanup(timeout=timeout)
        assert faasd.healthy(), "faasd does not answer /healthz"
        faas.assert_handler_responds(self.hello.ip)
        faas.wait_for_cleanup(timeout=timeout)
        assert faasd.bundles() == []
        assert faasd.runc_containers() == []
        assert faasd.container_cgroups() == []
        assert faas.get_process_count() == 0
        after = faasd.fds()
        leaked = {fd: t for fd, t in after.items() if self.fds_before.get(fd) != t}
        assert len(after) == len(self.fds_before) and leaked == {}, \
            f"faasd's fds before {self.fds_before}, changed {leaked}"
