"""Prometheus metrics: GET /metrics on the control API and on --metrics-listen.

The metrics count what the request path reports (invocations by outcome, durations,
cold and warm starts, deploys) and read the live figures (pools, active requests,
containers, open fds) at each scrape. The exposition must pass `promtool check
metrics`, and a real Prometheus server (Debian's `prometheus`) scraping faasd's
metrics listener must see the calls made.
"""

import json
import shutil
import urllib.parse

import pytest

from lib.helpers import parse_samples
from lib.vm import wait_for

pytestmark = pytest.mark.integration

METRICS_PORT = 9100
LISTEN = f"127.0.0.1:{METRICS_PORT}"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def series_of(samples: dict, function: str) -> list:
    return [s for s in samples if f'function="{function}"' in s]


def curl_metrics(vm, *where: str) -> tuple:
    """(content type, body) of GET /metrics; `where` is curl's target arguments."""
    r = vm.run(["curl", "-sS", "--fail", "--max-time", "10", "-D", "/dev/stderr", *where])
    headers = dict(line.split(": ", 1) for line in r.stderr.split("\r\n") if ": " in line)
    return headers.get("Content-Type"), r.stdout


def control_metrics(faasd) -> str:
    content_type, body = curl_metrics(faasd.vm, "--unix-socket", faasd.socket,
                                      "http://x/metrics")
    assert content_type == CONTENT_TYPE
    return body


def invocations(function: str, outcome: str) -> str:
    return f'faasd_function_invocations_total{{function="{function}",outcome="{outcome}"}}'


def statuses(results: list) -> list:
    return [r["status"] for r in results]


@pytest.mark.faasd_args("--metrics-listen", LISTEN)
def test_calls_are_counted_by_outcome_on_both_listeners(faas, faasd, vm):
    hello = faas.deploy_handler("hello", options=("--rate-limit", "1"))
    crash = faas.deploy_handler("crash", "exit-nonzero",
                                options=("--no-start-check", "--connect-timeout", "60s"))
    # Four clients at once against a bucket of one token: one served, three 429s.
    burst = statuses(faas.make_requests(hello.ip, count=4, concurrency=4, timeout=30))
    assert 200 in burst and 429 in burst, burst
    assert faas.make_request(crash.ip, timeout=60)["status"] == 502
    faas.wait_for_cleanup()

    samples = parse_samples(control_metrics(faasd))
    assert samples[invocations("hello", "ok")] == burst.count(200)
    assert samples[invocations("hello", "rejected_rate")] == burst.count(429)
    assert samples[invocations("hello", "handler_error")] == 0
    assert samples[invocations("crash", "handler_error")] == 1
    assert samples[invocations("crash", "ok")] == 0
    # Rejections are no request durations; every served client was a cold start.
    assert samples['faasd_function_duration_seconds_count{function="hello"}'] == burst.count(200)
    assert samples['faasd_function_starts_total{function="hello",kind="cold"}'] == burst.count(200)
    assert samples['faasd_function_starts_total{function="hello",kind="warm"}'] == 0
    assert samples['faasd_function_duration_seconds_bucket{function="hello",le="+Inf"}'] == \
        burst.count(200)
    assert samples["faasd_functions_deployed"] == 2
    assert samples['faasd_deploys_total{outcome="ok"}'] == 2
    assert samples["faasd_deploy_import_duration_seconds_count"] == 2
    assert samples['faasd_function_active_requests{function="hello"}'] == 0
    assert samples["faasd_containers_running"] == 0
    assert samples["faasd_open_fds"] > 0
    assert any(s.startswith("faasd_build_info{") for s in samples), samples

    # The metrics listener answers the same series without a token.
    content_type, body = curl_metrics(vm, f"http://{LISTEN}/metrics")
    assert content_type == CONTENT_TYPE
    assert parse_samples(body)[invocations("hello", "ok")] == burst.count(200)

    # The exposition is valid as Prometheus's own tool sees it.
    check = vm.run(["promtool", "check", "metrics"], check=False, input=body)
    assert check.returncode == 0, check

    # `faas rm` takes the function's series with it.
    faas.remove_handler("crash")
    samples = parse_samples(control_metrics(faasd))
    assert series_of(samples, "crash") == []
    assert samples["faasd_functions_deployed"] == 1
    assert samples[invocations("hello", "ok")] == burst.count(200)


def test_queue_rejections_queue_wait_and_active_requests(faas, faasd):
    d = faas.deploy_handler("slow", "slow", options=("--env", "SLEEP_MS=2000",
                                                     "--max-concurrency", "1", "--queue", "1"))
    first = faas.start_requests(d.ip, timeout=30, log_name="first")
    faas.wait_runtime("slow", lambda rt: rt["active"] == 1, what="the first client to be served")
    samples = parse_samples(control_metrics(faasd))
    assert samples['faasd_function_active_requests{function="slow"}'] == 1
    assert samples["faasd_containers_running"] == 1
    second = faas.start_requests(d.ip, timeout=30, log_name="second")
    faas.wait_runtime("slow", lambda rt: rt["queued"] == 1, what="the second client to queue")
    assert faas.make_request(d.ip, timeout=10)["status"] == 503
    assert first.results()[0]["status"] == 200
    assert second.results()[0]["status"] == 200
    faas.wait_for_cleanup()

    samples = parse_samples(control_metrics(faasd))
    assert samples[invocations("slow", "ok")] == 2
    assert samples[invocations("slow", "rejected_queue")] == 1
    assert samples['faasd_function_active_requests{function="slow"}'] == 0
    # Three clients passed the rate limit (there is none); the second waited for the
    # rest of the first one's 2 s of work, the others not at all.
    assert samples['faasd_function_queue_wait_seconds_count{function="slow"}'] == 3
    assert samples['faasd_function_queue_wait_seconds_bucket{function="slow",le="0.5"}'] == 2
    assert samples['faasd_function_queue_wait_seconds_bucket{function="slow",le="5"}'] == 3
    # The two served clients took at least the handler's 2 s each.
    assert samples['faasd_function_duration_seconds_count{function="slow"}'] == 2
    assert samples['faasd_function_duration_seconds_bucket{function="slow",le="1"}'] == 0


def test_a_handler_that_never_connects_counts_as_a_timeout(faas, faasd):
    d = faas.deploy_handler("silent", "never-connects",
                            options=("--no-start-check", "--connect-timeout", "500ms"))
    assert faas.make_request(d.ip, timeout=30)["status"] == 504
    faas.wait_for_cleanup()
    samples = parse_samples(control_metrics(faasd))
    assert samples[invocations("silent", "timeout")] == 1
    assert samples['faasd_function_starts_total{function="silent",kind="cold"}'] == 1


@pytest.mark.faasd_args("--metrics-listen", LISTEN, "--warm", "1")
def test_pool_gauges_and_warm_starts(faas, faasd):
    d = faas.deploy_handler("hello")
    faas.wait_pool_ready("hello", 1)
    samples = parse_samples(control_metrics(faasd))
    assert samples['faasd_function_pool_ready{function="hello"}'] == 1
    assert samples["faasd_containers_running"] >= 1
    assert faas.make_request(d.ip, timeout=30)["status"] == 200
    samples = parse_samples(control_metrics(faasd))
    assert samples['faasd_function_starts_total{function="hello",kind="warm"}'] == 1
    assert samples[invocations("hello", "ok")] == 1


@pytest.mark.faasd_args("--metrics-listen", LISTEN)
def test_the_metrics_listener_serves_nothing_but_get_metrics(faasd, vm):
    for method, path in (("GET", "/api/list"), ("GET", "/healthz"), ("DELETE", "/api/functions/x"),
                         ("POST", "/api/new"), ("POST", "/metrics")):
        r = vm.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                    "-X", method, f"http://{LISTEN}{path}"])
        assert r.stdout == "404", (method, path, r)


@pytest.mark.faasd_args("--metrics-listen", f"[::1]:{METRICS_PORT}")
def test_the_metrics_listener_on_ipv6_loopback(faasd, vm):
    content_type, body = curl_metrics(vm, "-g", f"http://[::1]:{METRICS_PORT}/metrics")
    assert content_type == CONTENT_TYPE
    assert parse_samples(body)["faasd_functions_deployed"] == 0


@pytest.mark.parametrize("address, message", [
    ("nonsense", "--metrics-listen: expected HOST:PORT, got 'nonsense'"),
    ("localhost:9100", "--metrics-listen: bad address in 'localhost:9100'"),
    ("127.0.0.1:0", "--metrics-listen: bad port in '127.0.0.1:0'"),
])
def test_a_bad_metrics_address_stops_faasd_at_start(faasd_unstarted, vm, address, message):
    r = vm.run(faasd_unstarted.command("--metrics-listen", address), check=False, timeout=30)
    assert r.returncode == 2, r
    assert r.stderr == f"Error: {message}\n", r
    assert faasd_unstarted.faas_addresses() == []


def test_a_metrics_port_in_use_stops_faasd_at_start(faasd_unstarted, vm):
    holder = vm.spawn(["/usr/bin/python3", "-c",
                       "import socket, time\n"
                       f"s = socket.create_server(('127.0.0.1', {METRICS_PORT}))\n"
                       "print('ready', flush=True)\n"
                       "time.sleep(600)\n"], log_name="port-holder")
    wait_for(lambda: "ready" in holder.stdout_text(), 10, what="the port to be taken")
    r = vm.run(faasd_unstarted.command("--metrics-listen", LISTEN), check=False, timeout=30)
    assert r.returncode == 1, r
    assert f"cannot start: listen on {LISTEN}: Address already in use" in r.stderr, r


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: faasd
    static_configs:
      - targets: ["{target}"]
"""


def prometheus_query(vm, port: int, query: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    r = vm.run(["curl", "-sS", "--max-time", "5", url], check=False)
    if r.returncode != 0:
        return []
    answer = json.loads(r.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@pytest.mark.faasd_args("--metrics-listen", LISTEN)
def test_a_prometheus_server_scrapes_the_calls(faas, faasd, vm, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is not installed (scripts/install-deps.sh)"
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(target=LISTEN))
    port = 9090
    server = vm.spawn([prometheus, f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{port}"], log_name="prometheus")

    d = faas.deploy_handler("hello")
    served = statuses(faas.make_requests(d.ip, count=3, timeout=30))
    assert served == [200, 200, 200], served
    assert faas.make_request(d.ip, path="/again", timeout=30)["status"] == 200

    def counted():
        assert server.poll() is None, server.stderr_text()[-3000:]
        result = prometheus_query(vm, port, invocations("hello", "ok"))
        return result and float(result[0]["value"][1]) == 4
    wait_for(counted, 60, what="Prometheus to have scraped 4 calls of hello")
    up = prometheus_query(vm, port, 'up{job="faasd"}')
    assert up and up[0]["value"][1] == "1", up
