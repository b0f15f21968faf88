"""Admission control: bounded concurrency, a bounded queue with a timeout, a rate
limit, and the per-function scaling settings that drive them.

faasd answers a client it will not serve itself: 503 with `Retry-After: 1` when the
queue is full or the client waited too long in it, 429 with `Retry-After` when the
function's rate limit is exceeded. The slow handler (tests/handlers/slow) holds its
client for SLEEP_MS and answers when it got it and when it answered (wall clock, ms).
"""

import json
import re
import signal

import pytest

from lib.helpers import hello_body
from lib.vm import wait_for

pytestmark = pytest.mark.integration


def parse_lines(body: str) -> dict:
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


def deploy_slow(faas, sleep_ms: int, *options: str):
    return faas.deploy_handler("slow", "slow", options=("--env", f"SLEEP_MS={sleep_ms}", *options))


def assert_served(r, sleep_ms: int) -> dict:
    assert r["status"] == 200 and r["complete"], r
    answer = parse_lines(r["body"])
    assert answer["slept"] == str(sleep_ms), answer
    return answer


def assert_503(r):
    assert r["status"] == 503 and r["complete"], r
    assert r["reason"] == "Service Unavailable", r
    assert r["headers"].get("retry-after") == "1", r
    assert r["body"] == "Service Unavailable\n", r


def start_and_wait_accepted(faas, ip: str, name: str = "slow", log_name: str = "first"):
    """One request in the background; returns once faasd has accepted it."""
    before = faas.runtime(name)["requests"]
    running = faas.start_requests(ip, timeout=30, log_name=log_name)
    faas.wait_runtime(name, lambda rt: rt["requests"] > before, what=f"{log_name} to be accepted")
    return running


def test_three_clients_at_once_one_served_one_queued_one_refused(faas, faasd):
    d = deploy_slow(faas, 1000, "--max-concurrency", "1", "--queue", "1")
    results = faas.make_requests(d.ip, count=3, concurrency=3, timeout=30)
    assert sorted(r["status"] for r in results) == [200, 200, 503], results
    refused = next(r for r in results if r["status"] == 503)
    assert_503(refused)
    assert refused["elapsed"] < 1, refused
    a, b = sorted((assert_served(r, 1000) for r in results if r["status"] == 200),
                  key=lambda answer: int(answer["start_ms"]))
    assert int(b["start_ms"]) >= int(a["end_ms"]), (a, b)
    assert faas.runtime("slow")["rejected_503"] == 1
    faas.wait_for_cleanup()


def test_full_queue_answers_503_and_the_queued_client_is_served_next(faas, faasd):
    """The same three clients one after the other, so that which one runs, which
    waits and which is refused is known."""
    d = deploy_slow(faas, 1500, "--max-concurrency", "1", "--queue", "1")
    first = start_and_wait_accepted(faas, d.ip)
    second = faas.start_requests(d.ip, timeout=30, log_name="second")
    faas.wait_runtime("slow", lambda rt: rt["queued"] == 1, what="the second client to queue")
    third = faas.make_request(d.ip, timeout=10)
    assert_503(third)
    assert third["elapsed"] < 1, third  # at once, not after a slot freed
    a = assert_served(first.results()[0], 1500)
    b = assert_served(second.results()[0], 1500)
    # The queued client got its container only after the first had answered.
    assert int(b["start_ms"]) >= int(a["end_ms"]), (a, b)
    rt = faas.runtime("slow")
    assert (rt["rejected_503"], rt["rejected_429"], rt["queued"]) == (1, 0, 0), rt
    assert rt["warm_starts"] + rt["cold_starts"] == 2, rt
    faas.wait_for_cleanup()


def test_queue_timeout_answers_503_before_a_slot_frees(faas, faasd):
    d = deploy_slow(faas, 4000, "--max-concurrency", "1", "--queue", "4",
                    "--queue-timeout", "500ms")
    first = start_and_wait_accepted(faas, d.ip)
    queued = faas.make_requests(d.ip, count=2, concurrency=2, timeout=10)
    for r in queued:
        assert_503(r)
        # After the queue timeout, well before the first request's 4 s end.
        assert 0.4 <= r["elapsed"] < 2.5, r
    assert_served(first.results()[0], 4000)
    rt = faas.runtime("slow")
    assert (rt["rejected_503"], rt["queued"]) == (2, 0), rt
    faas.wait_for_cleanup()


def test_queue_0_answers_503_at_once(faas, faasd):
    d = deploy_slow(faas, 1500, "--max-concurrency", "1", "--queue", "0")
    first = start_and_wait_accepted(faas, d.ip)
    r = faas.make_request(d.ip, timeout=10)
    assert_503(r)
    assert r["elapsed"] < 1, r
    assert_served(first.results()[0], 1500)
    assert faas.runtime("slow")["rejected_503"] == 1
    faas.wait_for_cleanup()


def test_queued_clients_get_503_when_the_function_is_removed(faas, faasd):
    d = deploy_slow(faas, 3000, "--max-concurrency", "1", "--queue", "4")
    first = start_and_wait_accepted(faas, d.ip)
    queued = faas.start_requests(d.ip, count=2, concurrency=2, timeout=30, log_name="queued")
    faas.wait_runtime("slow", lambda rt: rt["queued"] == 2, what="two clients to queue")
    faas.remove_handler("slow")
    for r in queued.results():
        assert_503(r)
        assert r["elapsed"] < 1.5, r  # at the removal, not when the running one ends
    # The running request finishes first; then nothing is left.
    assert_served(first.results()[0], 3000)
    faasd.wait_idle()
    assert faasd.faas_addresses() == []


def test_queued_clients_get_503_at_sigterm_and_the_running_one_drains(faas, faasd):
    d = deploy_slow(faas, 3000, "--max-concurrency", "1", "--queue", "4")
    first = start_and_wait_accepted(faas, d.ip)
    queued = faas.start_requests(d.ip, count=2, concurrency=2, timeout=30, log_name="queued")
    faas.wait_runtime("slow", lambda rt: rt["queued"] == 2, what="two clients to queue")
    faasd.proc.kill(signal.SIGTERM)
    for r in queued.results():
        assert_503(r)
        assert r["elapsed"] < 1.5, r
    assert_served(first.results()[0], 3000)
    assert faasd.proc.wait(timeout=20) == 0, faasd.log()[-3000:]
    wait_for(lambda: not faasd.related_processes(), 5, what="processes to exit")
    assert faasd.leftovers() == {}


@pytest.mark.vmtest
def test_concurrency_limit_serves_one_at_a_time(faas, faasd):
    d = deploy_slow(faas, 500, "--max-concurrency", "1", "--queue", "8")
    results = faas.make_requests(d.ip, count=4, concurrency=4, timeout=30)
    spans = sorted((int(a["start_ms"]), int(a["end_ms"]))
                   for a in (assert_served(r, 500) for r in results))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"two requests were served at once: {spans}"
    assert faas.runtime("slow")["rejected_503"] == 0
    faas.wait_for_cleanup()


def test_rate_limit_answers_429_with_retry_after(faas, faasd):
    d = faas.deploy_handler("hello", options=("--rate-limit", "2"))
    results = faas.make_requests(d.ip, count=6)
    statuses = [r["status"] for r in results]
    # The bucket starts full: a burst of 2.
    assert statuses[:2] == [200, 200], results
    assert set(statuses) == {200, 429}, results
    for r in results:
        if r["status"] == 200:
            assert r["complete"] and r["body"] == hello_body(), r
            continue
        assert r["complete"] and r["reason"] == "Too Many Requests", r
        assert r["body"] == "Too Many Requests\n", r
        assert r["headers"].get("retry-after", "").isdigit(), r
        assert int(r["headers"]["retry-after"]) >= 1, r
    # No more served than the burst plus 2 per second.
    wall = max(r["started"] + r["elapsed"] for r in results)
    assert statuses.count(200) <= 2 + int(2 * wall) + 1, (wall, statuses)
    rt = faas.runtime("hello")
    assert rt["rejected_429"] == statuses.count(429), (rt, statuses)
    assert rt["rejected_503"] == 0, rt
    faas.wait_for_cleanup()


# Each refused by `faas new` (exit 2, CLI11) or by faasd (exit 1, "Error: ..."), with
# an error naming the setting. Ranges: warm and warm_max 0..64, max_concurrency
# 1..4096, queue 0..65536, rate_limit 0 or 0.01..1e6.
BAD_CLI_OPTIONS = [
    (("--warm", "-1"), "warm"),
    (("--warm", "65"), "warm"),
    (("--warm-max", "65"), r"warm[-_ ]max"),
    (("--warm", "5", "--warm-max", "2"), re.escape("warm (5) is above warm-max (2)")),
    (("--max-concurrency", "0"), r"max[-_ ]concurrency"),
    (("--max-concurrency", "4097"), r"max[-_ ]concurrency"),
    (("--queue", "-1"), "queue"),
    (("--queue", "65537"), "queue"),
    (("--queue-timeout", "abc"), r"queue[-_ ]timeout"),
    (("--idle-timeout", "soon"), r"idle[-_ ]timeout"),
    (("--rate-limit", "-1"), r"rate[-_ ]limit"),
    (("--rate-limit", "0.001"), r"rate[-_ ]limit"),
]


@pytest.mark.parametrize("options,words", BAD_CLI_OPTIONS,
                         ids=[" ".join(o) for o, _ in BAD_CLI_OPTIONS])
def test_bad_scaling_option_refused_by_cli_and_changes_nothing(faas, faasd, options, words):
    d = faas.deploy_handler("keep", options=("--warm", "0", "--queue", "5"))
    registry = faas.read_registry()
    for name in ("keep", "x"):
        r = faasd.faas("new", name, *options, stdin_path=faas.image("echo"))
        assert r.returncode in (1, 2) and r.stdout == "", r
        assert re.search(words, r.stderr, re.IGNORECASE), r.stderr
    assert faas.read_registry() == registry
    assert faas.list_handlers() == registry
    assert faasd.faas_addresses() == [d.ip]
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == ["keep"]
    faas.assert_handler_responds(d.ip)  # still hello, not echo
    faas.wait_for_cleanup()


BAD_API_OPTIONS = [
    ({"warm": -1}, "warm"),
    ({"warm": "two"}, "warm"),
    ({"warm": 65}, "warm"),
    ({"warm": 5, "warm_max": 2}, re.escape("warm (5) is above warm-max (2)")),
    ({"max_concurrency": 0}, r"max[-_ ]concurrency"),
    ({"queue": -1}, "queue"),
    ({"queue": 65537}, "queue"),
    ({"queue_timeout": "abc"}, r"queue[-_ ]timeout"),
    ({"idle_timeout": "soon"}, r"idle[-_ ]timeout"),
    ({"rate_limit": -1}, r"rate[-_ ]limit"),
    ({"rate_limit": 2000000}, r"rate[-_ ]limit"),
]


@pytest.mark.parametrize("options,words", BAD_API_OPTIONS,
                         ids=[json.dumps(o)[1:-1].replace('"', "") for o, _ in BAD_API_OPTIONS])
def test_bad_scaling_option_refused_by_api_with_400(faas, faasd, options, words):
    d = faas.deploy_handler("keep")
    registry = faas.read_registry()
    for name in ("keep", "x"):
        status, body = faasd.api("POST", "/api/new",
                                 headers={"X-Image-Name": name,
                                          "X-Function-Options": json.dumps(options)},
                                 body_path=faas.image("echo"))
        assert status == 400, (status, body)
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert re.search(words, body["error"], re.IGNORECASE), body
    assert faas.read_registry() == registry
    assert faasd.faas_addresses() == [d.ip]
    assert faas.vm.listdir(f"{faasd.state_dir}/images") == ["keep"]


def test_warm_above_the_default_warm_max_raises_it(faas, faasd):
    """Only an explicit --warm-max below --warm is an error; the default follows --warm."""
    faas.deploy_handler("big", options=("--warm", "10"))
    scaling = faas.describe("big")["scaling"]
    assert (scaling["warm"], scaling["warm_max"]) == (10, 10), scaling
    faas.wait_pool_ready("big", 10)


SCALING_OPTIONS = ("--warm", "2", "--warm-max", "5", "--idle-timeout", "90s",
                   "--max-concurrency", "3", "--queue", "7", "--queue-timeout", "1500ms",
                   "--rate-limit", "50")
SCALING = {"warm": 2, "warm_max": 5, "idle_timeout_ms": 90000, "max_concurrency": 3,
           "queue": 7, "queue_timeout_ms": 1500, "rate_limit": 50, "reuse": 1}


def test_scaling_settings_are_described_stored_and_survive_a_restart(faas, faasd):
    d = faas.deploy_handler("tuned", options=SCALING_OPTIONS)
    plain = faas.deploy_handler("plain")
    assert faas.describe("tuned")["scaling"] == SCALING
    assert faas.read_registry()["tuned"]["scaling"] == SCALING
    # Unset settings take faasd's defaults (--warm 0 included).
    cores = int(faas.vm.run(["nproc"]).stdout)
    assert faas.describe("plain")["scaling"] == {
        "warm": 0, "warm_max": 8, "idle_timeout_ms": 300000, "max_concurrency": 4 * cores,
        "queue": 64, "queue_timeout_ms": 10000, "rate_limit": 0, "reuse": 1}
    faas.wait_pool_ready("tuned", 2)
    faas.assert_handler_responds(d.ip)
    registry = faas.read_registry()

    faasd.restart()
    assert faas.read_registry() == registry
    assert faas.describe("tuned")["scaling"] == SCALING
    assert faas.describe("plain")["scaling"] == registry["plain"]["scaling"]
    # The runtime counters are not persisted; the pool is refilled at start-up.
    rt = faas.wait_pool_ready("tuned", 2)
    assert rt["requests"] == 0 and rt["warm_starts"] == 0, rt
    faas.assert_handler_responds(d.ip)
    faas.assert_handler_responds(plain.ip)


@pytest.mark.faasd_args("--warm", "1", "--warm-max", "4", "--idle-timeout", "2m",
                        "--max-concurrency", "2", "--queue", "3", "--queue-timeout", "5s",
                        "--rate-limit", "20")
def test_faasd_flags_are_the_defaults_of_new_functions(faas, faasd):
    faas.deploy_handler("fn")
    assert faas.describe("fn")["scaling"] == {
        "warm": 1, "warm_max": 4, "idle_timeout_ms": 120000, "max_concurrency": 2,
        "queue": 3, "queue_timeout_ms": 5000, "rate_limit": 20, "reuse": 1}
    # A function's own value wins over faasd's.
    faas.deploy_handler("own", options=("--queue", "9", "--warm", "0"))
    scaling = faas.describe("own")["scaling"]
    assert (scaling["queue"], scaling["warm"], scaling["max_concurrency"]) == (9, 0, 2), scaling
    faas.wait_pool_ready("fn", 1)
