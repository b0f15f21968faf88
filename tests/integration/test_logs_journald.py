"""faasd --log-driver journald: each function line also goes to journald.

A real systemd-journald runs inside the test's own mount namespace (the sandbox's):
tmpfs over /run/systemd, /run/log and /var/log/journal there, so it binds its
socket and writes its journal where only this test sees them; journalctl reads the
journal back from that directory.
"""

import json

import pytest

from lib.vm import wait_for

pytestmark = pytest.mark.integration

JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_DIR = "/run/log/journal"


@pytest.fixture
def journald(vm):
    vm.run(["sh", "-ec",
            "mount -t tmpfs -o mode=0755 test-journal-run /run/systemd\n"
            "mkdir -p /run/systemd/journal\n"
            "mount -t tmpfs -o mode=0755 test-journal-log /run/log\n"
            "if [ -d /var/log/journal ]; then mount -t tmpfs test-journal-var /var/log/journal; fi\n"])
    proc = vm.spawn([JOURNALD], log_name="journald")
    wait_for(lambda: vm.exists("/run/systemd/journal/socket"), 10, what="journald's socket")
    yield proc
    proc.kill()
    proc.wait(10)


def journal_entries(vm, function):
    r = vm.run(["journalctl", "--directory", JOURNAL_DIR, "-o", "json", "--no-pager",
                f"FAAS_FUNCTION={function}"], check=False)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def deploy_and_call(faas, path):
    d = faas.deploy_handler("chatty", "chatty")
    r = faas.make_request(d.ip, path=path, timeout=20)
    assert r["status"] == 200, r


@pytest.mark.parametrize("how", ["flag", "under-systemd"])
def test_function_lines_reach_journald_with_their_fields(vm, journald, faasd_unstarted,
                                                         faas_unstarted, how):
    if how == "flag":
        faasd_unstarted.start("--log-driver", "journald")
    else:  # how systemd starts a service whose output goes to the journal
        faasd_unstarted.launcher = ["env", "JOURNAL_STREAM=8:12345"]
        faasd_unstarted.start()
    deploy_and_call(faas_unstarted, "/to-journal")
    entries = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(
        journal_entries(vm, "chatty")), 10, interval=0.1, what="two journal entries")
    by_stream = {e["FAAS_STREAM"]: e for e in entries}
    out, err = by_stream["stdout"], by_stream["stderr"]
    assert out["MESSAGE"] == "out /to-journal" and out["PRIORITY"] == "6", out
    assert err["MESSAGE"] == "err /to-journal" and err["PRIORITY"] == "4", err
    for e in (out, err):
        assert e["SYSLOG_IDENTIFIER"] == "faasd-fn:chatty", e
        assert e["FAAS_VERSION"] == "1", e
        assert e["FAAS_CONTAINER"].startswith("faas-"), e
    # The store stays the source of `faas logs`.
    logs = faasd_unstarted.faas("logs", "chatty", "--stream", "stdout", check=True).stdout
    assert "out /to-journal" in logs


def test_the_file_driver_sends_nothing_to_journald(vm, journald, faasd_unstarted,
                                                   faas_unstarted):
    faasd_unstarted.launcher = ["env", "JOURNAL_STREAM=8:12345"]
    faasd_unstarted.start("--log-driver", "file")
    deploy_and_call(faas_unstarted, "/not-to-journal")
    wait_for(lambda: " ok" in faasd_unstarted.faas("logs", "chatty", "--stream", "request",
                                                   check=True).stdout,
             10, interval=0.1, what="the request line")
    # journald got the request's lines or never will: faasd sent them before it wrote
    # the request line, and --sync waits until journald has written what it received.
    vm.run(["journalctl", "--directory", JOURNAL_DIR, "--sync"], check=False)
    assert journal_entries(vm, "chatty") == []
