"""Hostile clients of the metrics: a flood of idle connections on --metrics-listen
must not reach the control API or the functions, and GET /metrics on the TCP control
API wants its token like every route there."""

from __future__ import annotations

import json
import time

import pytest

from hostile_lib import assert_flood_shed, raw, start_flood

pytestmark = pytest.mark.integration

METRICS = ("127.0.0.1", 9100)
API_PORT = 8080
TOKEN = "s3cret-token"
METRICS_CAP = 8
METRICS_DEADLINE_SECONDS = 5


@pytest.mark.faasd_args("--metrics-listen", f"{METRICS[0]}:{METRICS[1]}")
def test_idle_flood_on_the_metrics_listener_disturbs_neither_api_nor_functions(faas, faasd, vm):
    d = faas.deploy_handler("fn")
    count = 200
    flood = start_flood(vm, faasd, METRICS[0], METRICS[1], count, "metrics")

    started = time.monotonic()
    r = faasd.faas("list", "--json")
    assert r.returncode == 0 and "fn" in json.loads(r.stdout), r
    status, body = faasd.api("GET", "/metrics")
    assert status == 200 and "faasd_functions_deployed 1" in body, body
    assert time.monotonic() - started < 3, "the control API waited behind the metrics flood"
    faas.assert_handler_responds(d.ip)

    assert_flood_shed(flood, count, METRICS_DEADLINE_SECONDS, METRICS_CAP)
    # Once the flood is gone the listener serves scrapes again.
    out = raw(vm, f"{METRICS[0]}:{METRICS[1]}",
              "GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    assert out["reply"].startswith("HTTP/1.1 200 "), out
    faas.wait_for_cleanup()


def test_metrics_on_the_tcp_api_need_the_token(faasd_unstarted, vm):
    token_file = f"{vm.run_dir}/token"
    vm.write_file(token_file, (TOKEN + "\n").encode())
    faasd_unstarted.start("--listen-tcp", f"127.0.0.1:{API_PORT}", "--token-file", token_file)
    where = f"127.0.0.1:{API_PORT}"
    out = raw(vm, where, "GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    assert out["reply"].startswith("HTTP/1.1 401 "), out
    assert "faasd_" not in out["reply"], out
    out = raw(vm, where, f"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer {TOKEN}"
                         "\\r\\nConnection: close\\r\\n\\r\\n")
    assert out["reply"].startswith("HTTP/1.1 200 "), out
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in out["reply"], out
    assert "faasd_functions_deployed 0" in out["reply"], out
