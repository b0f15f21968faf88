"""The warm pool: containers started ahead of requests, each serving one client.

Every test asks for its pool explicitly (`--warm N` to faasd or to `faas new`): the
fixture starts faasd with `--warm 0` otherwise. A pooled container waiting for a
client has a bundle (STATE/bundles/<id>) and a runc container of the same id, so
the ids on disk are the pool's; runc_containers() must always list the same ids.
"""

import re
import signal
import time

import pytest

from lib.helpers import hello_body
from lib.vm import wait_for

pytestmark = pytest.mark.integration

# Long enough for container starts in a TCG VM (the vmtest selection).
POOL_TIMEOUT = 60


def containers_on_disk(faasd) -> set:
    """The ids of the containers that exist now; bundles and runc agree on them."""
    bundles = set(faasd.bundles())
    runc = set(faasd.runc_containers())
    assert bundles == runc, f"bundles {sorted(bundles)} != runc containers {sorted(runc)}"
    return bundles


def wait_containers_on_disk(faasd, count: int, timeout: float = 20) -> set:
    """Waits until exactly `count` containers exist (a served one may still be removed)."""
    def settled():
        ids = set(faasd.bundles())
        return ids if len(ids) == count and ids == set(faasd.runc_containers()) else None
    return wait_for(settled, timeout, what=f"{count} container(s) on disk")


def wait_pool_settled(faas, name: str, timeout: float = 20) -> dict:
    """Waits until `name`'s pool is full at its current target and nothing runs;
    returns that runtime."""
    return faas.wait_runtime(
        name, lambda rt: (rt["pool_ready"] == rt["pool_target"] and rt["pool_starting"] == 0
                          and rt["active"] == 0 and rt["queued"] == 0),
        timeout, what=f"the pool of {name} to reach its target")


def in_containers(cgroup: str, ids: set) -> bool:
    """Whether a /proc/PID/cgroup text or a cgroup path names one of the containers."""
    return bool(ids & set(re.split(r"[/:\n]", cgroup)))


def processes_in(faasd, ids: set) -> list:
    return [p for p in faasd.related_processes() if in_containers(p["cgroup"], ids)]


def leftovers_of(faasd, ids: set) -> dict:
    """What is left of the containers `ids`: bundles, runc containers, cgroups, processes."""
    found = {
        "bundles": sorted(set(faasd.bundles()) & ids),
        "runc containers": sorted(set(faasd.runc_containers()) & ids),
        "cgroups": [c for c in faasd.container_cgroups() if in_containers(c, ids)],
        "processes": [(p["pid"], p["comm"]) for p in processes_in(faasd, ids)],
    }
    return {k: v for k, v in found.items() if v}


def wait_gone(faasd, ids: set, timeout: float = 10) -> None:
    """Waits until nothing is left of the containers `ids`."""
    try:
        wait_for(lambda: not leftovers_of(faasd, ids), timeout,
                 what=f"{sorted(ids)} to be gone")
    except AssertionError:
        raise AssertionError(f"left of {sorted(ids)} after {timeout} s: "
                             f"{leftovers_of(faasd, ids)}") from None


def parse_lines(body: str) -> dict:
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


def assert_all_status(results, status, body=None):
    bad = [r for r in results if not (r["status"] == status and r["complete"]
                                       and (body is None or r["body"] == body))]
    assert bad == [], f"{len(bad)} of {len(results)} requests not {status}, first: {bad[:3]}"


RUNTIME_KEYS = {"pool_ready", "pool_starting", "pool_target", "active", "queued", "requests",
                "warm_starts", "cold_starts", "rejected_503", "rejected_429", "pool_failures"}


def test_faasd_starts_a_container_per_request_and_keeps_none_by_default(faas, faasd):
    """faasd's own default (no --warm anywhere) is the original platform's behaviour:
    each request starts its container, and once requests have ended, sequential or
    concurrent, bundles/ is empty and the runtime lists no container."""
    assert not any(a.startswith("--warm") for a in faasd.args)
    d = faas.deploy_handler("hello")
    record = faas.describe("hello")
    assert record["scaling"]["warm"] == 0, record
    assert set(record["runtime"]) >= RUNTIME_KEYS, record["runtime"]
    assert record["runtime"]["pool_target"] == 0, record["runtime"]
    assert containers_on_disk(faasd) == set()
    for _ in range(3):
        faas.assert_handler_responds(d.ip)
        faasd.wait_idle()
        assert faasd.bundles() == [] and faasd.runc_containers() == []
    assert_all_status(faas.make_requests(d.ip, count=8, concurrency=8), 200, hello_body())
    faasd.wait_idle()
    assert faasd.bundles() == [] and faasd.runc_containers() == []
    rt = faas.runtime("hello")
    assert (rt["requests"], rt["warm_starts"], rt["cold_starts"]) == (11, 0, 11), rt
    assert (rt["pool_ready"], rt["pool_starting"], rt["pool_target"]) == (0, 0, 0), rt


@pytest.mark.faasd_args("--warm", "1")
def test_faasd_warm_1_keeps_one_container_waiting_per_function(faas, faasd):
    """The pool is one flag away: --warm 1 keeps a started container per function, with
    its bundle, which serves the next request warm and is replaced."""
    d = faas.deploy_handler("hello")
    assert faas.describe("hello")["scaling"]["warm"] == 1
    rt = faas.wait_pool_ready("hello", 1)
    assert rt["pool_target"] == 1, rt
    pooled = wait_containers_on_disk(faasd, 1)
    faas.assert_handler_responds(d.ip)
    rt = faas.wait_pool_ready("hello", 1)
    assert (rt["requests"], rt["warm_starts"], rt["cold_starts"]) == (1, 1, 0), rt
    refilled = wait_containers_on_disk(faasd, 1)
    assert len(refilled) == 1 and refilled != pooled, (pooled, refilled)


@pytest.mark.vmtest
@pytest.mark.faasd_args("--warm", "2", "--connect-timeout", "60000")
def test_warm_pool_fills_serves_warm_and_refills(faas, faasd):
    d = faas.deploy_handler("hello")
    assert faas.describe("hello")["scaling"]["warm"] == 2
    rt = faas.wait_pool_ready("hello", 2, timeout=POOL_TIMEOUT)
    assert rt["pool_target"] == 2 and rt["requests"] == 0, rt
    # Idle, yet two containers wait: two bundles, two runc containers, their handlers.
    pooled = containers_on_disk(faasd)
    assert len(pooled) == 2
    assert len(processes_in(faasd, pooled)) >= 2, faasd.related_processes()

    faas.assert_handler_responds(d.ip)
    rt = faas.runtime("hello")
    assert (rt["requests"], rt["warm_starts"], rt["cold_starts"]) == (1, 1, 0), rt
    # The pool refills to two; the container that served is gone, the other still waits.
    rt = faas.wait_pool_ready("hello", 2, timeout=POOL_TIMEOUT)
    assert rt["pool_target"] == 2, rt
    refilled = wait_containers_on_disk(faasd, 2, timeout=POOL_TIMEOUT)
    assert len(refilled & pooled) == 1, (pooled, refilled)


@pytest.mark.faasd_args("--warm", "2")
def test_function_with_warm_0_keeps_no_pool(faas, faasd):
    """A function's own --warm 0 overrides faasd's --warm 2: no pool, no adaptation
    after a burst, every request cold."""
    d = faas.deploy_handler("cold", options=("--warm", "0"))
    assert faas.describe("cold")["scaling"]["warm"] == 0
    assert faas.runtime("cold")["pool_target"] == 0
    faasd.wait_idle()
    assert_all_status(faas.make_requests(d.ip, count=3), 200, hello_body())
    assert_all_status(faas.make_requests(d.ip, count=8, concurrency=8), 200, hello_body())
    rt = faas.runtime("cold")
    assert (rt["requests"], rt["warm_starts"], rt["cold_starts"]) == (11, 0, 11), rt
    assert rt["pool_target"] == 0, rt
    faasd.wait_idle()
    rt = faas.runtime("cold")
    assert (rt["pool_ready"], rt["pool_starting"], rt["pool_target"]) == (0, 0, 0), rt


def test_redeploy_with_warm_0_turns_the_pool_off(faas, faasd):
    """A redeploy with --warm 0 stops the pool at once: no target left to decay."""
    d = faas.deploy_handler("fn", options=("--warm", "3"))
    faas.wait_pool_ready("fn", 3)
    faas.deploy_handler("fn", "echo", options=("--warm", "0"))
    assert faas.describe("fn")["scaling"]["warm"] == 0
    rt = faas.runtime("fn")
    assert rt["pool_target"] == 0, f"--warm 0 after a redeploy still targets a pool: {rt}"
    faasd.wait_idle(timeout=10)
    assert_all_status(faas.make_requests(d.ip, count=2, body="cold"), 200, "cold")
    faasd.wait_idle(timeout=10)


def test_pooled_containers_serve_exactly_one_client_each(faas, faasd):
    """tests/handlers/greedy connects to /control.sock again after its first client
    and answers every client it got with their number: always served=1."""
    d = faas.deploy_handler("greedy", "greedy", options=("--warm", "2"))
    results = []
    for _ in range(5):  # each from a ready pooled container
        faas.wait_pool_ready("greedy", 2)
        results += faas.make_requests(d.ip)
    rt = faas.runtime("greedy")
    assert rt["warm_starts"] == 5 and rt["cold_starts"] == 0, rt
    results += faas.make_requests(d.ip, count=16, concurrency=8, timeout=60)
    assert_all_status(results, 200)
    answers = [parse_lines(r["body"]) for r in results]
    assert [a["served"] for a in answers] == ["1"] * 21, answers
    assert {a["reconnect"] for a in answers} <= {"ECONNREFUSED", "ENOENT"}, answers
    ids = [a["id"] for a in answers]
    assert len(set(ids)) == 21, f"a container served twice: {ids}"
    rt = wait_pool_settled(faas, "greedy")
    assert rt["requests"] == 21 and rt["warm_starts"] + rt["cold_starts"] == 21, rt
    assert rt["warm_starts"] >= 5 and rt["pool_failures"] == 0, rt


def test_pool_target_grows_with_a_burst_up_to_warm_max(faas, faasd):
    d = faas.deploy_handler("hello", options=("--warm", "1", "--warm-max", "3"))
    rt = faas.wait_pool_ready("hello", 1)
    assert rt["pool_target"] == 1, rt
    burst = faas.start_requests(d.ip, count=24, concurrency=12, timeout=60)
    targets = []
    while not burst.done():
        targets.append(faas.runtime("hello")["pool_target"])
    assert_all_status(burst.results(), 200, hello_body())
    rt = faas.runtime("hello")
    targets.append(rt["pool_target"])
    # Misses raised the target (it drops only after 10 s without one), never past 3.
    assert max(targets) <= 3, targets
    assert rt["pool_target"] >= 2, (rt, targets)
    assert rt["warm_starts"] + rt["cold_starts"] == 24 and rt["cold_starts"] >= 1, rt
    rt = wait_pool_settled(faas, "hello")
    assert 1 <= rt["pool_target"] <= 3, rt
    wait_containers_on_disk(faasd, rt["pool_ready"])


@pytest.mark.slow
def test_pool_target_falls_back_to_warm_after_the_burst(faas, faasd):
    d = faas.deploy_handler("hello", options=("--warm", "1", "--warm-max", "3"))
    faas.wait_pool_ready("hello", 1)
    assert_all_status(faas.make_requests(d.ip, count=24, concurrency=12, timeout=60), 200)
    ended = time.monotonic()
    raised = faas.runtime("hello")["pool_target"]
    assert raised >= 2
    # One step down per 10 s without a miss, and not below warm.
    faas.wait_runtime("hello", lambda rt: rt["pool_target"] == 1, timeout=10 * raised + 15,
                      what="pool_target to fall back to 1")
    took = time.monotonic() - ended
    assert took >= 10 * (raised - 1) - 3, f"{raised} -> 1 took only {took:.1f} s"
    faas.wait_pool_ready("hello", 1)
    wait_containers_on_disk(faasd, 1)
    faas.assert_handler_responds(d.ip)


def test_idle_timeout_scales_to_zero_and_a_request_brings_the_pool_back(faas, faasd):
    """--idle-timeout 2s rather than 1s: faasd looks at its pools once a second, and the
    regrown pool has to be seen before it goes again. --warm-max 1 keeps the target
    at warm when the cold request counts as a miss."""
    d = faas.deploy_handler("hello", options=("--warm", "1", "--warm-max", "1",
                                              "--idle-timeout", "2s"))
    assert faas.describe("hello")["scaling"]["idle_timeout_ms"] == 2000
    faas.wait_pool_ready("hello", 1)
    rt = faas.wait_runtime("hello", lambda rt: (rt["pool_target"], rt["pool_ready"],
                                                rt["pool_starting"]) == (0, 0, 0),
                           timeout=15, what="the pool to scale to zero")
    faasd.wait_idle()  # no bundle, runc container, cgroup or process left
    assert faasd.idle_leftovers() == {}

    faas.assert_handler_responds(d.ip)
    after = faas.runtime("hello")
    assert after["cold_starts"] == rt["cold_starts"] + 1, (rt, after)
    assert after["warm_starts"] == rt["warm_starts"], (rt, after)
    faas.wait_runtime("hello", lambda rt: rt["pool_target"] == 1 and rt["pool_ready"] == 1,
                      timeout=15, what="the pool to grow back to 1")
    # Two more seconds without a request: zero again.
    faas.wait_runtime("hello", lambda rt: rt["pool_target"] == 0 and rt["pool_ready"] == 0,
                      timeout=15, what="the pool to scale to zero again")
    faasd.wait_idle()


def test_redeploy_stops_every_pooled_container_of_the_old_version(faas, faasd):
    """When `faas new` returns, the old version's pooled containers are gone (the
    answer waits for their cleanup), and every request reaches the new version."""
    d = faas.deploy_handler("fn", "hello", options=("--warm", "2"))
    faas.wait_pool_ready("fn", 2)
    old = containers_on_disk(faasd)
    assert len(old) == 2
    new = faas.deploy_handler("fn", "echo", options=("--warm", "2"))
    assert new.ip == d.ip
    # Checked at the end, after what matters more: no request reaches an old container.
    left_at_return = (set(faasd.bundles()) | set(faasd.runc_containers())) & old
    cgroups_at_return = [c for c in faasd.container_cgroups() if in_containers(c, old)]
    # Every request is answered by the new version (echo), none by hello.
    results = faas.make_requests(d.ip, count=4, body="version 2")
    results += faas.make_requests(d.ip, count=6, concurrency=3, body="version 2")
    assert_all_status(results, 200, "version 2")
    wait_gone(faasd, old)
    rt = wait_pool_settled(faas, "fn")
    assert rt["pool_ready"] >= 2, rt
    assert not wait_containers_on_disk(faasd, rt["pool_ready"]) & old
    # When the deploy has returned, none of the old version's containers is left.
    assert not left_at_return, \
        f"old pooled containers still on disk when `faas new` returned: {sorted(left_at_return)}"
    assert not cgroups_at_return, cgroups_at_return


def test_rm_stops_the_pool_and_leaves_nothing(faas, faasd):
    """Pooled containers hold no connection on the address: it is gone when `faas rm`
    returns, as without a pool, and so is everything else once they have exited."""
    d = faas.deploy_handler("fn", options=("--warm", "3"))
    faas.wait_pool_ready("fn", 3)
    pooled = containers_on_disk(faasd)
    assert len(pooled) == 3
    faas.remove_handler("fn")
    addresses_at_return = faasd.faas_addresses()
    faasd.wait_idle(timeout=10)
    wait_gone(faasd, pooled)
    assert faasd.leftovers() == {}
    assert "fn" not in faas.read_registry()
    assert faasd.api("GET", "/api/functions/fn")[0] == 404
    assert faas.make_request(d.ip, timeout=5)["status"] is None
    assert addresses_at_return == [], "the address outlived `faas rm`"


@pytest.mark.parametrize("how", ["rm", "redeploy", "sigterm"])
def test_stopping_a_pool_while_it_starts_leaves_nothing(faas, faasd, how):
    """Eight containers are still being created by runc when the function is removed,
    redeployed, or faasd is stopped; three rounds, since each round hits a different
    moment of the creation. Regression: killing `runc run` mid-creation orphaned its
    children (runc:[0:PARENT], runc:[2:INIT]) while they were still in the container's
    cgroups, faasd's one attempt to remove them failed, and the cgroups stayed."""
    for _ in range(3):
        faas.deploy_handler("fn", options=("--warm", "8"))
        if how == "rm":
            faas.remove_handler("fn")
        elif how == "redeploy":
            old = set(re.findall(r"container (faas-[0-9a-f]+-\d+): spawning for fn", faasd.log()))
            faas.deploy_handler("fn", "echo", options=("--warm", "8"))
            wait_gone(faasd, old)
            wait_pool_settled(faas, "fn")
            faas.remove_handler("fn")
        else:
            assert faasd.stop() == 0, faasd.log()[-3000:]
            wait_for(lambda: not faasd.related_processes(), 5, what="processes to exit")
            assert faasd.leftovers() == {}
            faasd.start(*faasd.args)  # restores fn: its pool starts again
            assert faasd.stop() == 0, faasd.log()[-3000:]
            wait_for(lambda: not faasd.related_processes(), 5, what="processes to exit")
            assert faasd.leftovers() == {}
            faasd.start(*faasd.args)
            continue
        faasd.wait_idle(timeout=10)


@pytest.mark.vmtest
@pytest.mark.faasd_args("--connect-timeout", "60000")
def test_kill9_with_a_pool_then_restart_replaces_the_pooled_containers(faas, faasd):
    d = faas.deploy_handler("hello", options=("--warm", "2"))
    faas.wait_pool_ready("hello", 2, timeout=POOL_TIMEOUT)
    old = containers_on_disk(faasd)
    assert len(old) == 2
    faasd.kill9()
    # What a dead faasd leaves: the pooled bundles, and runc containers until their
    # handlers see the control socket close and exit.
    assert set(faasd.bundles()) == old
    assert set(faasd.runc_containers()) <= old
    faasd.start(*faasd.args)
    # Start-up removed them before serving; the pool is refilling with new ones.
    now = set(faasd.bundles()) | set(faasd.runc_containers())
    assert not now & old, f"pooled containers of the dead faasd left: {sorted(now & old)}"
    wait_gone(faasd, old, timeout=POOL_TIMEOUT)
    rt = faas.wait_pool_ready("hello", 2, timeout=POOL_TIMEOUT)
    assert rt["requests"] == 0 and rt["pool_target"] == 2, rt  # counters restart
    assert not wait_containers_on_disk(faasd, 2, timeout=POOL_TIMEOUT) & old
    faas.assert_handler_responds(d.ip)
    rt = faas.runtime("hello")
    assert (rt["requests"], rt["warm_starts"]) == (1, 1), rt


@pytest.mark.faasd_args("--drain-timeout", "20000")
def test_sigterm_with_pools_exits_at_once_and_leaves_nothing(faas, faasd):
    """Pooled containers are not requests: SIGTERM stops them without draining."""
    faas.deploy_handler("a", options=("--warm", "2"))
    faas.deploy_handler("b", "echo", options=("--warm", "1"))
    faas.wait_pool_ready("a", 2)
    faas.wait_pool_ready("b", 1)
    pooled = containers_on_disk(faasd)
    assert len(pooled) == 3
    started = time.monotonic()
    assert faasd.stop() == 0, faasd.log()[-3000:]
    took = time.monotonic() - started
    assert took < 10, f"SIGTERM took {took:.1f} s with only pooled containers"
    wait_for(lambda: not faasd.related_processes(), 5, what="processes to exit")
    assert faasd.leftovers() == {}
    assert "faasd stopped" in faasd.log()


def test_sigterm_stops_the_pool_at_once_and_drains_a_running_request(faas, faasd):
    d = faas.deploy_handler("slow", "slow", options=("--warm", "2", "--env", "SLEEP_MS=3000"))
    faas.wait_pool_ready("slow", 2)
    running = faas.start_requests(d.ip, timeout=30)
    faas.wait_runtime("slow", lambda rt: rt["active"] == 1, what="the request to run")
    faasd.proc.kill(signal.SIGTERM)
    # The pooled containers go while the request still has seconds to run.
    wait_for(lambda: len(faasd.runc_containers()) == 1, 2.5,
             what="only the running request's container to be left")
    assert faasd.proc.wait(timeout=20) == 0, faasd.log()[-3000:]
    r = running.results()[0]
    assert r["status"] == 200 and r["complete"], r
    assert parse_lines(r["body"])["slept"] == "3000"
    wait_for(lambda: not faasd.related_processes(), 5, what="processes to exit")
    assert faasd.leftovers() == {}


# A crash before connecting, and a handler that never connects (timed out after
# 100 ms): without back-off the pool would replace them several times a second.
@pytest.mark.parametrize("handler,options,status", [
    ("exit-nonzero", (), 502),
    ("never-connects", ("--connect-timeout", "100ms"), 504),
], ids=["exit-nonzero", "never-connects"])
def test_broken_handler_with_a_pool_backs_off(faas, faasd, handler, options, status):
    d = faas.deploy_handler("broken", handler,
                            options=("--warm", "1", "--no-start-check", *options))
    first = faas.wait_runtime("broken", lambda rt: rt["pool_failures"] >= 1, timeout=10,
                              what="the first pool failure")["pool_failures"]
    time.sleep(3)  # a window to count failures in: there is no condition to wait for
    rt = faas.runtime("broken")
    assert rt["pool_failures"] - first <= 10, f"{rt['pool_failures'] - first} failures in 3 s: {rt}"
    assert rt["pool_ready"] == 0, rt
    for r in faas.make_requests(d.ip, count=3, timeout=20):
        assert r["elapsed"] < 5, r
        if status == 504 and not r["raw_len"]:  # closed without an answer
            assert r["error"] is None or "ConnectionReset" in r["error"], r
        else:
            assert r["status"] == status and r["complete"], r
    faas.remove_handler("broken")
    faasd.wait_idle(timeout=10)
    assert faasd.leftovers() == {}
