"""Per-function logs: `faas logs` and GET /api/functions/NAME/logs.

faasd keeps what each function's containers write on stdout and stderr, and one
line per request, in STATE/logs/NAME/ (docs/OPERATIONS.md, "Logs"). The chatty
handler (tests/handlers/chatty) writes "out PATH" on stdout and "err PATH" on
stderr for each request; /bin-... adds a line with control and invalid bytes and
/exit3-... exits 3 after answering.
"""

import json
import re

import pytest

from lib.vm import wait_for

pytestmark = pytest.mark.integration

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def records(faasd, name, *args):
    r = faasd.faas("logs", name, "--json", *args, check=True)
    return [json.loads(line) for line in r.stdout.splitlines()]


def wait_records(faasd, name, condition, what, timeout=20):
    """Polls `faas logs NAME --json` until condition(records) holds; returns them."""
    last = {}

    def check():
        last["records"] = records(faasd, name)
        return last["records"] if condition(last["records"]) else None

    try:
        return wait_for(check, timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last records: {last.get('records')}") from None


def requests_of(recs, path=None):
    return [r for r in recs if r["stream"] == "request"]


def call(faas, ip, path):
    r = faas.make_request(ip, path=path, timeout=20)
    assert r["status"] == 200, r
    return r


def log_bytes(faasd, name):
    r = faasd.vm.run(["sh", "-c", f"cat {faasd.state_dir}/logs/{name}/*.log | wc -c"])
    return int(r.stdout)


def test_stdout_stderr_and_a_line_per_request(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/a")
    recs = wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the request line")
    out = [r for r in recs if r["stream"] == "stdout"]
    err = [r for r in recs if r["stream"] == "stderr"]
    assert [r["line"] for r in out] == ["out /a"], recs
    assert [r["line"] for r in err] == ["err /a"], recs
    request = requests_of(recs)[0]
    assert request["outcome"] == "ok" and request["exit_status"] == 0, request
    assert request["start"] == "cold" and request["version"] == 1, request
    assert request["container"] == out[0]["container"] == err[0]["container"], recs
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", request["client"]), request
    assert "answered" not in request, request
    for r in recs:
        assert re.fullmatch(TIME, r["time"]), r

    plain = faasd.faas("logs", "chatty", check=True).stdout.splitlines()
    cid = request["container"]
    assert f" v1 {cid} stdout | out /a" in "\n".join(plain), plain
    assert f" v1 {cid} stderr | err /a" in "\n".join(plain), plain
    req_line = [line for line in plain if " request " in line]
    assert len(req_line) == 1, plain
    assert re.fullmatch(TIME + rf" v1 {cid} request \S+:\d+ cold queued \d+ ms exit 0 \d+ ms ok",
                        req_line[0]), req_line


def test_stream_tail_and_since_filter(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    for i in range(3):
        call(faas, d.ip, f"/n{i}")
    wait_records(faasd, "chatty", lambda rs: len(requests_of(rs)) == 3, "three request lines")
    assert [r["line"] for r in records(faasd, "chatty", "--stream", "stdout")] == \
        ["out /n0", "out /n1", "out /n2"]
    assert [r["line"] for r in records(faasd, "chatty", "--stream", "stderr", "--tail", "2")] == \
        ["err /n1", "err /n2"]
    assert len(records(faasd, "chatty", "--stream", "request")) == 3
    assert records(faasd, "chatty", "--tail", "0") == []
    everything = records(faasd, "chatty")
    assert records(faasd, "chatty", "--since", "1h") == everything
    assert records(faasd, "chatty", "--since", "2000-01-01T00:00:00Z") == everything
    assert records(faasd, "chatty", "--since", "2199-01-01T00:00:00+02:00") == []
    last = everything[-1]["time"]
    assert all(r["time"] >= last for r in records(faasd, "chatty", "--since", last))


def test_control_bytes_and_invalid_utf8_are_escaped(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/bin-1")
    recs = wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the request line")
    assert "bin \\x1b[31mred\\xff end" in [r.get("line") for r in recs], recs
    r = faasd.faas("logs", "chatty", check=True)
    assert "\x1b" not in r.stdout and "bin \\x1b[31mred\\xff end" in r.stdout, r.stdout


def test_request_lines_of_a_failing_handler_and_of_faasd_own_answers(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/exit3-x")
    failed = requests_of(wait_records(faasd, "chatty", lambda rs: requests_of(rs), "request"))
    assert failed[0]["exit_status"] == 3 and failed[0]["outcome"] == "handler_error", failed

    lazy = faas.deploy_handler("lazy", "never-connects",
                               options=("--no-start-check", "--connect-timeout", "300ms"))
    r = faas.make_request(lazy.ip, timeout=20)
    assert r["status"] == 504, r
    timeout = requests_of(wait_records(faasd, "lazy", lambda rs: requests_of(rs), "504 line"))
    assert timeout[0]["answered"] == 504 and timeout[0]["outcome"] == "timeout", timeout
    plain = faasd.faas("logs", "lazy", "--stream", "request", check=True).stdout
    assert re.search(r" request \S+ cold queued \d+ ms \d+ ms answered 504 timeout$", plain,
                     re.M), plain

    limited = faas.deploy_handler("limited", "hello", options=("--rate-limit", "1"))
    results = faas.make_requests(limited.ip, count=4, concurrency=4, timeout=20)
    assert 429 in [x["status"] for x in results], results
    recs = wait_records(faasd, "limited",
                        lambda rs: any(x.get("answered") == 429 for x in requests_of(rs)),
                        "a 429 line")
    rejected = [x for x in requests_of(recs) if x.get("answered") == 429][0]
    assert rejected["outcome"] == "rejected_rate" and rejected["start"] == "none", rejected
    assert rejected["container"] == "" and "exit_status" not in rejected, rejected


def test_follow_shows_new_lines_and_ends_when_the_function_is_removed(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/before")
    wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the first request line")
    follower = faasd.vm.spawn([faasd.faas_bin, "--socket", faasd.socket, "logs", "chatty", "-f",
                               "--stream", "stdout"], log_name="follower")
    # The lines before it came with its subscription: it is following now.
    wait_for(lambda: "out /before" in follower.stdout_text(), 10, what="the old line")
    call(faas, d.ip, "/after")
    wait_for(lambda: "out /after" in follower.stdout_text(), 5, what="the new line")
    assert "err /after" not in follower.stdout_text()
    assert follower.poll() is None, "still following"
    faas.remove_handler("chatty")
    assert follower.wait(10) == 0, follower.stderr_text()


def test_follow_over_the_api_is_chunked_ndjson(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/first")
    wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the first request line")
    curl = faasd.vm.spawn(["curl", "-sS", "-N", "-i", "--unix-socket", faasd.socket,
                           "http://faasd/api/functions/chatty/logs?follow=1&stream=stdout"],
                          log_name="curl")
    wait_for(lambda: '"line":"out /first"' in curl.stdout_text(), 10, what="the old line")
    head = curl.stdout_text().replace("\r\n", "\n").split("\n\n", 1)[0].lower()
    assert "transfer-encoding: chunked" in head and "application/x-ndjson" in head, head
    call(faas, d.ip, "/live")
    wait_for(lambda: '"line":"out /live"' in curl.stdout_text(), 5, what="the new line")
    body = curl.stdout_text().replace("\r\n", "\n").split("\n\n", 1)[1]
    assert [json.loads(line)["line"] for line in body.splitlines()] == ["out /first", "out /live"]


def test_logs_survive_a_restart_and_go_with_faas_rm(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/kept")
    before = wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the request line")
    faasd.restart()
    assert records(faasd, "chatty") == before
    d = faas.deploy_handler("chatty", "chatty")  # v2 logs on into the same file
    call(faas, d.ip, "/v2")
    after = wait_records(faasd, "chatty", lambda rs: len(requests_of(rs)) == 2, "second request")
    assert after[:len(before)] == before and after[-1]["version"] == 2, after
    assert faasd.vm.exists(f"{faasd.state_dir}/logs/chatty")
    st = faas.stat(f"{faasd.state_dir}/logs", f"{faasd.state_dir}/logs/chatty")
    for path, info in st.items():
        assert info["mode"] & 0o7777 == 0o700, (path, info)
    faas.remove_handler("chatty")
    assert not faasd.vm.exists(f"{faasd.state_dir}/logs/chatty")
    r = faasd.faas("logs", "chatty")
    assert r.returncode == 1 and r.stderr == "Error: no function named 'chatty'\n", r


@pytest.mark.faasd_args("--log-size", "256K", "--log-rate", "64K")
def test_a_flooding_handler_is_bounded_on_disk_and_slows_no_one_else(faas, faasd):
    flood = faas.deploy_handler("flood", "log-flood", options=("--env", "FLOOD_BYTES=8000000"))
    chatty = faas.deploy_handler("chatty", "chatty")
    running = faas.start_requests(flood.ip, timeout=60, log_name="flood")
    for i in range(5):
        call(faas, chatty.ip, f"/meanwhile-{i}")
    result = running.results()[0]
    assert result["status"] == 200 and "flooded stdout=4000000" in result["body"], result
    recs = wait_records(faasd, "flood", lambda rs: rs and rs[-1]["stream"] == "faasd"
                        or any(r["stream"] == "request" for r in rs[-1:]),
                        "the flood's end")
    dropped = sum(int(r["line"].split()[0]) for r in recs if r["stream"] == "faasd")
    assert dropped > 3000, [r for r in recs if r["stream"] != "stdout"]
    assert log_bytes(faasd, "flood") <= 256 * 1024
    cut = [r for r in recs if r["stream"] == "stderr"]
    assert all(len(r["line"]) <= 16384 for r in cut), [len(r["line"]) for r in cut]
    mine = wait_records(faasd, "chatty", lambda rs: len(requests_of(rs)) == 5, "chatty's lines")
    assert [r["line"] for r in mine if r["stream"] == "stdout"] == \
        [f"out /meanwhile-{i}" for i in range(5)]


@pytest.mark.parametrize("query,message", [
    ("tail=x", "invalid tail 'x'"),
    ("stream=stdin", "invalid stream 'stdin'"),
    ("since=yesterday", "since"),
    ("follow=maybe", "invalid follow 'maybe'"),
])
def test_bad_query_values_are_400_with_a_message(faas, faasd, query, message):
    faas.deploy_handler("chatty", "chatty")
    status, body = faasd.api("GET", f"/api/functions/chatty/logs?{query}")
    assert status == 400 and message in body["error"], (status, body)


def test_unknown_function_and_bad_arguments(faas, faasd):
    status, body = faasd.api("GET", "/api/functions/nope/logs")
    assert status == 404 and body == {"error": "no function named 'nope'"}, (status, body)
    r = faasd.faas("logs", "nope")
    assert r.returncode == 1 and r.stderr == "Error: no function named 'nope'\n", r
    faas.deploy_handler("chatty", "chatty")
    r = faasd.faas("logs", "chatty", "--since", "yesterday")
    assert r.returncode == 1 and r.stderr.startswith("Error: invalid since"), r
    r = faasd.faas("logs", "chatty", "--stream", "stdin")
    assert r.returncode == 2, r


def test_a_follower_ends_cleanly_when_faasd_stops(faas, faasd):
    d = faas.deploy_handler("chatty", "chatty")
    call(faas, d.ip, "/before")
    wait_records(faasd, "chatty", lambda rs: requests_of(rs), "the request line")
    follower = faasd.vm.spawn([faasd.faas_bin, "--socket", faasd.socket, "logs", "chatty", "-f"],
                              log_name="follower")
    wait_for(lambda: "out /before" in follower.stdout_text(), 10, what="the old line")
    assert faasd.stop() == 0
    assert follower.wait(10) == 0, follower.stderr_text()


@pytest.mark.parametrize("args,message", [
    (("--log-size", "100K"), "invalid --log-size '100K': at least 256K"),
    (("--log-size", "lots"), "invalid --log-size 'lots': expected bytes or a size like 8M"),
    (("--log-rate", "1MB"), "invalid --log-rate '1MB': expected bytes or a size like 8M"),
    (("--log-driver", "syslog"), "--log-driver: syslog not in {file,journald}"),
])
def test_faasd_bad_log_flags_are_refused_at_start(faasd_unstarted, args, message):
    r = faasd_unstarted.vm.run(faasd_unstarted.command(*args), check=False, timeout=30)
    assert r.returncode == 2, r
    assert r.stderr.startswith(f"Error: {message}"), r.stderr


def test_faasd_help_names_the_log_flags(faasd_unstarted):
    r = faasd_unstarted.vm.run([faasd_unstarted.faasd_bin, "--help"], check=True)
    for flag in ("--log-size", "--log-rate", "--log-driver"):
        assert flag in r.stdout, r.stdout


def test_faasd_removes_at_start_the_logs_of_functions_not_deployed(vm, faasd_unstarted):
    ghost = f"{faasd_unstarted.state_dir}/logs/ghost"
    vm.run(["mkdir", "-p", ghost])
    vm.write_file(f"{ghost}/current.log", b'{"time":"2026-12-06T05:12:03.123Z"}\n')
    faasd_unstarted.start()
    assert not vm.exists(ghost)
    assert vm.exists(f"{faasd_unstarted.state_dir}/logs")
