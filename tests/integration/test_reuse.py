"""--reuse N: one container serves up to N clients in turn.

tests/handlers/reuser serves up to FAAS_REUSE clients, reconnecting to /control.sock
after each, and answers served=<its count> and id=<one per process>. Between clients
the container waits in the function's pool; after its N-th client faasd closes its
control socket and a fresh container takes over."""

import pytest

from lib.vm import wait_for

pytestmark = pytest.mark.integration


def parse(result) -> dict:
    assert result["status"] == 200 and result["complete"], result
    return dict(line.split("=", 1) for line in result["body"].splitlines() if "=" in line)


@pytest.mark.vmtest
def test_a_container_serves_reuse_clients_in_turn_then_a_fresh_one_takes_over(faas, faasd):
    d = faas.deploy_handler("fn", "reuser",
                            options=("--reuse", "3", "--warm", "1", "--warm-max", "1"))
    answers = []
    for _ in range(4):
        faas.wait_pool_ready("fn", 1)
        answers.append(parse(faas.make_request(d.ip)))
    assert [a["served"] for a in answers] == ["1", "2", "3", "1"], answers
    assert answers[0]["id"] == answers[1]["id"] == answers[2]["id"] != answers[3]["id"]
    assert {a["reuse"] for a in answers} == {"3"}
    rt = faas.wait_pool_ready("fn", 1)
    assert (rt["requests"], rt["warm_starts"], rt["cold_starts"]) == (4, 4, 0), rt
    # Only the fresh container is left: the first one exited after its third client.
    wait_for(lambda: len(faasd.bundles()) == 1, 10, what="one container on disk")


def test_concurrent_clients_share_containers_but_each_gets_its_own_turn(faas, faasd):
    d = faas.deploy_handler("fn", "reuser", options=("--reuse", "5", "--warm", "2"))
    faas.wait_pool_ready("fn", 2)
    answers = [parse(r) for r in faas.make_requests(d.ip, count=30, concurrency=5)]
    by_container = {}
    for a in answers:
        by_container.setdefault(a["id"], []).append(int(a["served"]))
    for served in by_container.values():
        assert sorted(served) == list(range(1, len(served) + 1)), by_container
        assert len(served) <= 5, by_container
    assert len(by_container) >= 6, f"30 clients, at most 5 each: {by_container}"


def test_default_is_a_fresh_container_for_every_client(faas, faasd):
    d = faas.deploy_handler("fn", "reuser", options=("--warm", "1"))
    answers = []
    for _ in range(3):
        faas.wait_pool_ready("fn", 1)
        answers.append(parse(faas.make_request(d.ip)))
    assert [(a["served"], a["reuse"]) for a in answers] == [("1", "1")] * 3
    assert len({a["id"] for a in answers}) == 3


def test_redeploy_never_hands_a_client_to_a_container_of_the_old_version(faas, faasd):
    options = ("--reuse", "5", "--warm", "1", "--warm-max", "1")
    d = faas.deploy_handler("fn", "reuser", options=options + ("--env", "VERSION=1"))
    faas.wait_pool_ready("fn", 1)
    first = parse(faas.make_request(d.ip))
    assert (first["version"], first["served"]) == ("1", "1")
    faas.wait_pool_ready("fn", 1)  # the same container, back for its second client
    faas.deploy_handler("fn", "reuser", options=options + ("--env", "VERSION=2"))
    answers = [parse(faas.make_request(d.ip)) for _ in range(3)]
    assert {a["version"] for a in answers} == {"2"}, answers
    assert first["id"] not in {a["id"] for a in answers}


@pytest.mark.vmtest
def test_rm_with_reused_containers_leaves_nothing(faas, faasd):
    d = faas.deploy_handler("fn", "reuser", options=("--reuse", "10", "--warm", "2"))
    faas.wait_pool_ready("fn", 2)
    for r in faas.make_requests(d.ip, count=6, concurrency=2):
        parse(r)
    faas.remove_handler("fn")
    faasd.wait_idle(timeout=10)
    assert faasd.leftovers() == {}
