"""The cluster part of the benchmark: three faasd nodes (tests/lib/cluster.py: a LAN of
network namespaces, etcd, a bird2 per node, a bird2 ECMP router, docker-registry and a
client machine), all inside namespaces this script creates.

    cluster.py BIN_DIR BENCH_BIN OUT_JSON [--image HELLO_ARCHIVE] [--work DIR] [--quick]

BIN_DIR holds the faasd and faas measured, BENCH_BIN bench/loadgen. Writes OUT_JSON:

- deploy: `faas new NAME --image REF` through n1 of a new function until every node
  reports it ready and the router has a path to each (Cluster.wait_served), and the
  same for a redeploy of an existing function with a new setting (`--env RUN=i`);
- load: requests/s through the router with 1, 2 and 3 nodes serving one function
  (`--warm 1 --warm-max 1`): the birds of the other nodes stopped until the router's
  paths are exactly the serving nodes, then bench/loadgen on the client machine (10
  clients, a new connection per request, 10 s), and per node the request records its
  log got during the run; and a control, one node serving a function whose
  --max-concurrency is that of the three nodes together. 3 rounds, in turn.

HELLO_ARCHIVE is the hello handler's image archive (default: built or taken from the
test image cache by tests/lib/images.py). --quick: fewer and shorter runs, to try the
script. Every step is time-bound; the cluster is closed on every exit path, and what
was measured before a failure is written with an "error".
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lib.cluster import NODES, Cluster  # noqa: E402  (the path is set first)

RUNTIME = "runc"
LIMIT_S = 900          # the whole part; run.sh gives it a little more
STEP_S = 90            # one deploy (CLI and convergence), one switch of the routes
LOAD_CLIENTS = 10
LOAD_MAX = 200000      # requests per load run at most (loadgen stops at the time first)
CONTROL = "1c"         # the setup of one node with three nodes' --max-concurrency


class Deadline(Exception):
    pass


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  cluster: {text}", file=sys.stderr, flush=True)


class Archive:
    """What Cluster.push_image asks of an ImageBuilder, for one ready archive."""

    def __init__(self, path: Path):
        self.path = path

    def archive(self, _name: str) -> Path:
        return self.path


def utc_now() -> str:
    """Now as faasd stamps its log records (UTC, milliseconds)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def served_since(node, function: str, since: str) -> int:
    """Request records of `function` in `node`'s log stamped at or after `since`. Counting
    by time and not before/after totals: the log drops its older half when full."""
    r = node.faas("logs", function, "--stream", "request", "--json", "--since",
                  since[:19] + "Z", timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"faas logs on {node.name}: {r.stderr.strip()}")
    count = 0
    for line in r.stdout.splitlines():
        if line.strip() and json.loads(line)["time"] >= since:
            count += 1
    return count


def deploy(cluster, name: str, ref: str, version: int, *options: str) -> dict:
    """`faas new NAME --image REF OPTIONS` through n1, timed to the CLI's exit and to
    `version` served by every node and routed to each."""
    start = time.monotonic()
    r = cluster.nodes["n1"].faas("new", name, "--image", ref, *options, timeout=STEP_S)
    cli = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"faas new {name} failed: {r.stdout}{r.stderr}")
    cluster.wait_served(name, version, timeout=STEP_S)
    return {"name": name, "version": version, "cli_s": round(cli, 3),
            "ready_s": round(time.monotonic() - start, 3)}


def summary(runs: list) -> dict:
    ready = [r["ready_s"] for r in runs]
    cli = [r["cli_s"] for r in runs]
    return {"runs": runs, "ready_s": ready, "median_s": round(statistics.median(ready), 3),
            "cli_median_s": round(statistics.median(cli), 3)}


def route_only(cluster, prefix: str, serving: tuple) -> float:
    """Stops the birds of the nodes not in `serving`, starts those of `serving` that are
    stopped, and waits until the router's paths to `prefix` are exactly `serving`'s."""
    for name, node in cluster.nodes.items():
        if name not in serving and node.bird.running():
            node.bird.stop()
    for name in serving:
        if not cluster.nodes[name].bird.running():
            cluster.nodes[name].bird.start()
    return cluster.router.wait_paths(
        prefix, {cluster.nodes[n].address for n in serving}, STEP_S)


def runtime_counters(cluster, function: str, name: str) -> dict:
    """The `runtime` counters of `function` on node `name` (its own, not the cluster's)."""
    r = cluster.nodes[name].faas("describe", function, timeout=30)
    return json.loads(r.stdout).get("runtime", {}) if r.returncode == 0 else {}


def wait_pools(cluster, function: str, serving: tuple, timeout: float = 15) -> dict:
    """Waits (at most `timeout`) until each serving node's pool of `function` has a
    ready container; returns the runtime counters per node as last read."""
    deadline = time.monotonic() + timeout
    while True:
        counters = {name: runtime_counters(cluster, function, name) for name in serving}
        if (all(c.get("pool_ready", -1) >= 1 for c in counters.values())
                or time.monotonic() >= deadline):
            return counters
        time.sleep(0.1)


def load_run(cluster, function: str, ip: str, serving: tuple, seconds: float,
             loadgen: str) -> dict:
    paths_s = route_only(cluster, f"{ip}/32", serving)
    before = wait_pools(cluster, function, serving)
    since = utc_now()
    r = cluster.client.run([loadgen, "-a", ip, "-c", str(LOAD_CLIENTS), "-n", str(LOAD_MAX),
                            "-t", str(seconds)], timeout=seconds + 60)
    result = json.loads(r.stdout)
    latency = sorted(result.pop("latency_us"))
    served = {name: served_since(node, function, since) for name, node in cluster.nodes.items()}
    after = {name: runtime_counters(cluster, function, name) for name in serving}

    def delta(key: str) -> int:
        return sum(after[n].get(key, 0) - before[n].get(key, 0) for n in serving)

    return {
        "nodes": len(serving), "serving": list(serving), "paths_s": round(paths_s, 3),
        "pool_ready": {n: before[n].get("pool_ready", -1) for n in serving},
        "ok": result["ok"], "elapsed_s": result["elapsed_s"],
        "rps": round(result["ok"] / result["elapsed_s"], 1) if result["elapsed_s"] else 0.0,
        "errors": result["errors"], "statuses": result["statuses"], "served": served,
        "warm_starts": delta("warm_starts"), "cold_starts": delta("cold_starts"),
        "p50_ms": round(latency[(len(latency) + 1) // 2 - 1] / 1000, 2) if latency else None,
    }


def load_summary(runs: list) -> dict:
    """Per setup (the serving nodes, and the control: one node with the concurrency of
    three), medians over the rounds; the ratios of the medians to one node's."""
    setups = {}
    for label in dict.fromkeys(r["setup"] for r in runs):
        mine = [r for r in runs if r["setup"] == label]
        served = {name: statistics.median(r["served"][name] for r in mine) for name in NODES}
        total = sum(served.values())
        p50s = [r["p50_ms"] for r in mine if r["p50_ms"] is not None]
        setups[label] = {
            "nodes": mine[0]["nodes"],
            "function": mine[0]["function"],
            "max_concurrency": mine[0]["max_concurrency"],
            "serving": mine[0]["serving"],
            "rps": [r["rps"] for r in mine],
            "median_rps": round(statistics.median(r["rps"] for r in mine), 1),
            "failed": sum(sum(r["errors"].values()) for r in mine),
            "warm_starts": sum(r["warm_starts"] for r in mine),
            "cold_starts": sum(r["cold_starts"] for r in mine),
            "served_median": served,
            "share": {name: round(v / total, 3) if total else 0.0 for name, v in served.items()},
            "p50_ms": statistics.median(p50s) if p50s else None,
        }
    ratios = {}
    for base in ("1", CONTROL):
        for n in ("2", "3"):
            if base in setups and n in setups and setups[base]["median_rps"]:
                ratios[f"{n}/{base}"] = round(
                    setups[n]["median_rps"] / setups[base]["median_rps"], 2)
    return {"setups": setups, "ratios": ratios}


def measure(cluster, ref: str, args, out: dict, write) -> None:
    deploys = 2 if args.quick else 5
    seconds = 3 if args.quick else 10
    reps = 1 if args.quick else 3

    log(f"deploy to ready on three nodes: {deploys} new functions")
    runs = []
    for i in range(1, deploys + 1):
        runs.append(deploy(cluster, f"web{i}", ref, 1))
        log(f"  web{i}: {runs[-1]['ready_s']:.2f} s (faas new returned after "
            f"{runs[-1]['cli_s']:.2f} s)")
    out["deploy"] = summary(runs)
    write()

    log(f"redeploy with a new setting: {deploys} runs")
    runs = []
    for i in range(1, deploys + 1):
        runs.append(deploy(cluster, "web1", ref, 1 + i, "--env", f"RUN={i}"))
        log(f"  web1 v{1 + i}: {runs[-1]['ready_s']:.2f} s")
    out["redeploy"] = summary(runs)
    for i in range(1, deploys + 1):
        cluster.nodes["n1"].faas("rm", f"web{i}", timeout=STEP_S)
    write()

    log("load through the router with 1, 2 and 3 nodes serving")
    # --warm-max 1: each serving node starts every run with one ready container. With
    # the adaptive pool (up to 8), N nodes would start a run with up to 8 N containers
    # started before it, a head start that grows with N.
    pooled = ("--warm", "1", "--warm-max", "1")
    deploy(cluster, "load", ref, 1, *pooled)
    default = cluster.describe("load")["scaling"]["max_concurrency"]
    # The control: one node serving as many requests at once as three nodes do (each
    # node queues what is beyond its --max-concurrency).
    deploy(cluster, "load-c", ref, 1, *pooled, "--max-concurrency", str(len(NODES) * default))
    functions = {name: (cluster.describe(name)["ip"],
                        cluster.describe(name)["scaling"]["max_concurrency"])
                 for name in ("load", "load-c")}
    out["load"] = {"function": "load", "warm": 1, "warm_max": 1, "clients": LOAD_CLIENTS,
                   "seconds": seconds, "repetitions": reps, "max_concurrency": default,
                   "control_max_concurrency": functions["load-c"][1], "runs": []}
    setups = (("1", "load", 1), (CONTROL, "load-c", 1), ("2", "load", 2), ("3", "load", 3))
    try:
        for rep in range(1, reps + 1):
            for label, function, n in setups:
                ip, limit = functions[function]
                run = load_run(cluster, function, ip, NODES[:n], seconds, args.loadgen)
                run.update(setup=label, function=function, max_concurrency=limit,
                           repetition=rep)
                out["load"]["runs"].append(run)
                out["load"].update(load_summary(out["load"]["runs"]))
                write()
                log(f"  {n} node(s), --max-concurrency {limit}, round {rep}: "
                    f"{run['rps']:.1f} req/s, {sum(run['errors'].values())} failed, "
                    f"per node {run['served']}")
    finally:
        log("restarting the birds")
        route_only(cluster, f"{functions['load'][0]}/32", NODES)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bin_dir")
    parser.add_argument("bench_bin")
    parser.add_argument("out")
    parser.add_argument("--image", help="the hello handler's image archive")
    parser.add_argument("--work", help="where the cluster's files go (default: a temporary "
                                       "directory, removed afterwards)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv[1:])
    bin_dir = Path(args.bin_dir).resolve()
    for b in ("faasd", "faas"):
        if not os.access(bin_dir / b, os.X_OK):
            print(f"cluster.py: no {bin_dir / b}", file=sys.stderr)
            return 2
    args.loadgen = str(Path(args.bench_bin).resolve() / "loadgen")
    if not os.access(args.loadgen, os.X_OK):
        print(f"cluster.py: no {args.loadgen}", file=sys.stderr)
        return 2
    out_path = Path(args.out)

    def on_alarm(_sig, _frame):
        raise Deadline(f"the cluster part took longer than {LIMIT_S} s")

    def on_term(sig, _frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(LIMIT_S)

    out = {"nodes": len(NODES), "runtime": RUNTIME, "quick": args.quick,
           "loadavg_start": round(os.getloadavg()[0], 2)}

    def write() -> None:
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.rename(out_path)

    if args.image:
        images = Archive(Path(args.image).resolve())
    else:
        from lib.images import ImageBuilder
        images = ImageBuilder()
    with tempfile.TemporaryDirectory(prefix="faasd-cluster.", dir=args.work or "/var/tmp") as tmp:
        work = Path(tmp)
        auth = work / "no-auth.json"
        auth.write_text("{}")
        start = time.monotonic()
        cluster = None
        status = 0
        try:
            log("starting three nodes, the router and the client")
            cluster = Cluster(work, bin_dir, RUNTIME, str(auth))
            out["setup_s"] = round(time.monotonic() - start, 1)
            ref = cluster.push_image(images, "hello", "hello:1")
            measure(cluster, ref, args, out, write)
        except BaseException as e:  # a deadline or a signal too
            status = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
            out["error"] = f"{type(e).__name__}: {e}"[:4000]
            log(f"failed: {out['error'][:2000]}")
            if cluster is not None:
                (out_path.parent / "cluster-failed.log").write_text(cluster.logs(200))
        finally:
            signal.alarm(0)
            if cluster is not None:
                # A little more time to close: nodes drain and stop on SIGTERM.
                signal.alarm(180)
                try:
                    cluster.close()
                finally:
                    signal.alarm(0)
            out["took_s"] = round(time.monotonic() - start, 1)
            out["loadavg_end"] = round(os.getloadavg()[0], 2)
            write()
    log(f"took {out['took_s']:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
