"""Writes docs/PERFORMANCE.md and docs/img/*.png from the results of bench/run.sh.

    /usr/bin/python3 bench/report.py RESULTS_DIR DOCS_DIR

RESULTS_DIR holds what bench/floor and bench/loadgen printed (JSON with one
sample per request, in microseconds) and the facts and memory readings run.sh
and measure.sh wrote. Percentiles are nearest-rank.
"""

import json
import math
import re
import statistics
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

COMMAND = "sudo bench/run.sh"
VM_COMMAND = "sudo bench/run.sh --vm"
RUNTIMES = ("runc", "crun")
KB_PER_MIB = 1024  # /proc/PID/status counts in kB (KiB)
CLIENTS = (1, 10, 50)
POOLS = (1, 0)  # --warm 1 (the warm path) and --warm 0 (the default)
REUSE = 100  # clients one hello-reuse container serves in turn (--reuse)
REUSE_TARGET = 5  # reuse target: 10 clients at this many times the runc rate (10 workers)
CHATTY_LINES = 100  # lines the chatty hello-c writes per request (HELLO_LOG_LINES)
# The images of the deploy runs (bench/deploy_images.sh) and how the page names them.
DEPLOY_IMAGES = {"big": "the big image", "debian": "the Debian image"}
DEPLOY_ABOUT = {
    "big": ("two layers of random (incompressible) files, the hello handler in the first",
            "one small file of its second layer changed"),
    "debian": ("Debian bookworm (`mmdebstrap --variant=minbase --include=python3-minimal`, "
               "`podman import`) and the hello handler as a one-file layer on top",
               "the same base, the handler built with `-Os` instead of `-O2`"),
}
DEPLOY_TARGET = 1.3  # first deploy ≤ this × tar -x of the archive and its layers
REDEPLOY_TARGET = 0.15  # redeploy with a changed top layer ≤ this × the first deploy
REDEPLOY_TARGET_IMAGE = "debian"  # big's top layer is half the image: no target there
HWM_TARGET_MIB = 32


# ---- reading and summarising --------------------------------------------------------------

def load(results: Path, name: str):
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def samples(results: Path, name: str, key: str) -> list:
    """The samples (ms) of key in NAME.json; none when it is missing."""
    run = load(results, name)
    return [us / 1000 for us in run[key]] if run else []


def run_number(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def merged(results: Path, prefix: str, key: str) -> list:
    """The samples (ms) of key from every PREFIX-N.json block, in block order."""
    blocks = sorted(results.glob(f"{prefix}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [us / 1000 for p in blocks for us in json.loads(p.read_text())[key]]


def import_times(logs: list, name: str) -> list:
    """faasd's own import times (s) of NAME in each log ("imported NAME: ... in N ms"), in
    the order of the log: for a deploy run, the first deploy, the redeploy and the
    identical one."""
    pattern = re.compile(rf" imported {re.escape(name)}: .* in (\d+) ms")
    return [[int(ms) / 1000 for ms in pattern.findall(log.read_text())] for log in logs]


class Deploy:
    """The deploy runs of one image (measure.sh's deploy part): seconds of each timed step,
    faasd's import times from its log, its peak RSS, and the disk of the functions."""

    def __init__(self, results: Path, image: str):
        self.image, self.label = image, DEPLOY_IMAGES[image]
        self.facts = load(results, f"deploy-{image}-image")
        failed, self.measured = 0, {}

        def runs(kind: str) -> list:
            # The big image's first deploy, memory and tar -x of the layers alone keep the
            # names this page has always read, so that earlier runs' results still make one.
            old = {"faas": "deploy-faas", "mem": "deploy-mem", "tar": "deploy-tar"}
            prefix = old[kind] if image == "big" and kind in old else f"deploy-{image}-{kind}"
            return [json.loads(p.read_text()) for p in
                    sorted(results.glob(f"{prefix}-*.json"), key=run_number)]

        def seconds(kind: str) -> list:
            nonlocal failed
            timed = runs(kind)
            self.measured[kind] = len(timed)
            failed += sum(1 for run in timed if not run["to_exit_us"])
            return [run["to_exit_us"][0] / 1e6 for run in timed if run["to_exit_us"]]

        self.first = seconds("faas")
        self.tar = seconds("tarall")  # tar -x of the archive, then of each of its layers
        self.tar_layers = seconds("tar")  # tar -x of the layers alone (big only)
        self.redeploy = seconds("redeploy")  # v2: the same lower layers, another top
        self.same = seconds("same")  # v2 again
        self.failed = failed
        self.runs = len(runs("faas"))
        logs = sorted(results.glob(f"faasd-deploy-{image}-*.log"), key=run_number)
        if image == "big" and not logs:
            logs = sorted(results.glob("faasd-deploy-[0-9]*.log"), key=run_number)
        # Only the runs whose three deploys all imported: else a time could be another's.
        imports = [t for t in import_times(logs, image) if len(t) == 3]
        self.imports = [[t[k] for t in imports] for k in range(3)]
        self.hwm_mib = [m["vmhwm_kb"] / KB_PER_MIB for m in runs("mem")]
        self.disk = runs("disk")

    def median(self, values: list) -> float:
        return statistics.median(values) if values else math.nan


def _failures(run: dict) -> int:
    """Failed runs of a floor result, or failed requests of a loadgen result."""
    return run.get("failed", 0) + sum(run.get("errors", {}).values())


def percentile(samples: list, p: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rate(run) -> float:
    """Requests per second answered with status 200 (floor: runs that succeeded)."""
    return run["ok"] / run["elapsed_s"] if run and run["elapsed_s"] else 0.0


def fmt(value: float) -> str:
    if math.isnan(value):
        return "–"
    for limit, digits in ((1, 3), (10, 2), (100, 1)):
        if value < limit:
            return f"{value:.{digits}f}"
    return f"{value:.0f}"


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}×" if floor else "–"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Series:
    """The latency samples (ms) of one path, and the floor it is compared with."""

    def __init__(self, label: str, samples: list, floor=None):
        self.label, self.samples, self.floor = label, samples, floor

    def p(self, q: float) -> float:
        return percentile(self.samples, q)

    def row(self) -> str:
        if not self.samples:
            return f"| {self.label} | missing | | | | |"
        cells = []
        for q in (50, 90, 99):
            cell = f"{fmt(self.p(q))} ms"
            if self.floor is not None:
                cell += f" ({ratio(self.p(q), self.floor.p(q))})"
            cells.append(cell)
        floor = self.floor.label if self.floor is not None else "–"
        return f"| {self.label} | {' | '.join(cells)} | {len(self.samples)} | {floor} |"


class Results:
    def __init__(self, results: Path):
        self.path = results
        self.facts = load(results, "facts")
        self.many = load(results, "many")
        self.true = Series("spawn `/bin/true`", samples(results, "floor-true", "to_exit_us"))
        self.unshare = Series("spawn `unshare -fpmiun true`",
                              samples(results, "floor-unshare", "to_exit_us"), self.true)
        self.runc = Series("bare `runc run`, to the response's EOF",
                           merged(results, "latency-runc", "to_response_us"), self.unshare)
        self.runc_exit = Series("bare `runc run`, to runc's exit",
                                merged(results, "latency-runc", "to_exit_us"), self.unshare)
        self.cold = Series("faasd cold path (`--warm 0`)",
                           merged(results, "latency-cold", "latency_us"), self.runc)
        self.warm = Series("faasd warm path (`--warm 1`)",
                           merged(results, "latency-warm", "latency_us"), self.runc)
        warm_blocks = [json.loads(p.read_text()) for p in results.glob("latency-warm-*.json")]
        self.warm_not_ready = sum(b["not_ready"] for b in warm_blocks)
        self.warm_gave_up = any(b["gave_up"] for b in warm_blocks)
        self.latency = [self.true, self.unshare, self.runc, self.runc_exit, self.cold, self.warm]
        self.floors = {j: load(results, f"floor-runc-j{j}") for j in (1, 10)}
        self.loads = {(pool, c): load(results, f"load-warm{pool}-c{c}")
                      for pool in POOLS for c in CLIENTS}
        # The C SDK's example at 10 clients: a fresh container per request, and with reuse.
        self.hello_c = {reuse: (load(results, f"load-{name}-c10"),
                                load(results, f"describe-{name}"))
                        for reuse, name in ((1, "hello-c"), (REUSE, "hello-reuse"))}
        # hello-c --warm 1, quiet and writing CHATTY_LINES lines per request.
        self.logging = {lines: (Series(f"hello-c `--warm 1`, {plural(lines, 'line')} per request",
                                       samples(results, f"latency-log-{name}", "latency_us")
                                       if load(results, f"latency-log-{name}") else []),
                                load(results, f"load-log-{name}-c10"))
                        for lines, name in ((0, "quiet"), (CHATTY_LINES, "chatty"))}
        self.pool_memory = load(results, "pool-memory")
        self.deploys = {image: Deploy(results, image) for image in DEPLOY_IMAGES}
        # The big image by reference: downloaded, from faasd's layer cache, skopeo copy.
        self.pull = {kind: [s[0] / 1e6 for s in
                            (load(results, p.stem)["to_exit_us"]
                             for p in sorted(results.glob(f"pull-{kind}-*.json"))) if s]
                     for kind in ("faas", "cached", "skopeo", "push", "pushagain",
                                  "skopeopush")}
        self.hwm_mib = [m for d in self.deploys.values() for m in d.hwm_mib]
        # runc and crun in the vmtest guest (bench/run.sh --vm); None when not measured.
        # The cluster part (bench/cluster.py); None when it did not run.
        self.cluster = load(results, "cluster")
        self.vm_facts = load(results, "vm-facts")
        self.vm_machine = load(results, "vm-machine") or {}
        self.vm_bare = {rt: merged(results, f"vm-floor-{rt}", "to_response_us") for rt in RUNTIMES}
        self.vm_bare_exit = {rt: merged(results, f"vm-floor-{rt}", "to_exit_us") for rt in RUNTIMES}
        self.vm_cold = {rt: merged(results, f"vm-cold-{rt}", "latency_us") for rt in RUNTIMES}
        self.vm_failed = sum(_failures(json.loads(p.read_text()))
                             for p in results.glob("vm-*-*.json"))

    def floor_for(self, clients: int) -> dict:
        return self.floors[1 if clients == 1 else 10]


# ---- the page ---------------------------------------------------------------------------------

def missing_row(target: str, what: str) -> str:
    return f"| {target} | missing: {what} | not measured |"


def deploy_missing(d: Deploy, kinds: dict) -> str:
    """Why a figure of `d` from the steps `kinds` (kind: what the page calls it) is
    missing: a step not measured in this run, or one whose every run failed."""
    if not d.runs:
        return f"no deploy runs of {d.label}"
    absent = [what for kind, what in kinds.items() if not d.measured.get(kind)]
    if absent:
        return f"no {' or '.join(absent)} of {d.label} in this run"
    return f"the {' or '.join(kinds.values())} of {d.label} failed"


def ratio_row(target: str, measured: float, reference: float, limit: float) -> str:
    """A target row for `measured` ≤ `limit` × `reference` (both in seconds)."""
    return (f"| {target} | {measured:.2f} s vs {reference:.2f} s = {measured / reference:.2f}× | "
            f"{met(measured <= limit * reference)} |")


def rate_row(target: str, run: dict, floor: dict, limit: float, how: str) -> str:
    """A target row for the request rate of `run` ≥ `limit` × that of `floor`."""
    return (f"| {target} | {rate(run):.1f} vs {rate(floor):.1f} req/s = "
            f"{ratio(rate(run), rate(floor))} {how} | {met(rate(run) >= limit * rate(floor))} |")


def deploy_target_rows(r: Results) -> list:
    rows = []
    for d in r.deploys.values():
        target = (f"deploy ≤ {DEPLOY_TARGET} × tar -x of the archive and its layers "
                  f"({d.label})")
        if d.first and d.tar:
            rows.append(ratio_row(target, d.median(d.first), d.median(d.tar), DEPLOY_TARGET))
        else:
            rows.append(missing_row(target, deploy_missing(
                d, {"faas": "deploys", "tarall": "tar -x of the archive and its layers"})))
    d = r.deploys[REDEPLOY_TARGET_IMAGE]
    target = f"redeploy with a changed top layer ≤ {REDEPLOY_TARGET} × first deploy ({d.label})"
    if d.first and d.redeploy:
        rows.append(ratio_row(target, d.median(d.redeploy), d.median(d.first), REDEPLOY_TARGET))
    else:
        rows.append(missing_row(target, deploy_missing(
            d, {"faas": "deploys", "redeploy": "redeploys"})))
    target = f"peak RSS during deploy < {HWM_TARGET_MIB} MB"
    if r.hwm_mib:
        hwm = max(r.hwm_mib)
        per_image = ", ".join(f"{max(d.hwm_mib):.1f} MiB for {d.label}"
                              for d in r.deploys.values() if d.hwm_mib)
        rows.append(f"| {target} | {per_image} | {met(hwm < HWM_TARGET_MIB)} |")
    else:
        rows.append(missing_row(target, "no deploy runs"))
    return rows


def target_rows(r: Results) -> list:
    cold, runc, warm = r.cold, r.runc, r.warm
    target = "cold p50 ≤ bare runc p50 + 2 ms"
    if cold.samples and runc.samples:
        rows = [f"| {target} | {fmt(cold.p(50))} ms vs {fmt(runc.p(50))} ms + 2 ms | "
                f"{met(cold.p(50) <= runc.p(50) + 2)} |"]
    else:
        rows = [missing_row(target, "no latency blocks")]
    if warm.samples:
        rows.append(f"| warm p50 ≤ 1 ms | {fmt(warm.p(50))} ms | {met(warm.p(50) <= 1)} |")
    else:
        rows.append(missing_row("warm p50 ≤ 1 ms", "no latency blocks"))
    run, floor = r.loads[(1, 10)], r.floors[10]
    target = "10 clients ≥ 0.9 × back-to-back runc rate (10 workers)"
    if run and floor:
        rows.append(rate_row(target, run, floor, 0.9, "with `--warm 1`"))
    else:
        rows.append(missing_row(target, "no throughput runs"))
    run = r.hello_c[REUSE][0]
    target = (f"throughput with `--reuse`, 10 clients ≥ {REUSE_TARGET} × back-to-back runc "
              "rate (10 workers)")
    if run and floor:
        rows.append(rate_row(target, run, floor, REUSE_TARGET,
                             f"(hello-c, `--reuse {REUSE} --warm 1`)"))
    else:
        rows.append(missing_row(target, "no throughput runs"))
    rows += deploy_target_rows(r)
    if r.many:
        rss = r.many["vmrss_kb"] / KB_PER_MIB
        n = r.many["functions"]
        rows.append(f"| RSS with 100 functions < 20 MB | {rss:.1f} MiB with {n} | "
                    f"{met(rss < 20 and n >= 100)} |")
    else:
        rows.append(missing_row("RSS with 100 functions < 20 MB", "not run"))
    return rows


def warm_caveat(r: Results) -> list:
    if not r.warm_not_ready and not r.warm_gave_up:
        return []
    text = (f"{plural(r.warm_not_ready, 'warm request')} found no ready container after waiting "
            "5 s and went out anyway")
    if r.warm_gave_up:
        text += "; the client stopped a block early after 3 of these in a row"
    return ["", f"Caveat: {text}."]


def errors(run: dict) -> str:
    e = run["errors"]
    parts = [f"{kind} {e[kind]}" for kind in ("connect", "io") if e[kind]]
    parts += [f"status {s}: {n}" for s, n in run["statuses"].items() if s != "200"]
    return ", ".join(parts) if parts else "0"


def load_row(label: str, run, floor: dict) -> str:
    if run is None:
        return f"| {label} | missing | | | | | |"
    lat = [us / 1000 for us in run["latency_us"]]
    p50, p99 = (f"{fmt(percentile(lat, q))} ms" if lat else "–" for q in (50, 99))
    return (f"| {label} | {rate(run):.1f} | {ratio(rate(run), rate(floor))} | {run['ok']} | "
            f"{errors(run)} | {p50} | {p99} |")


def hello_c_label(reuse: int) -> str:
    return f"hello-c (C SDK) `--reuse {reuse} --warm 1`, 10 clients"


def throughput_rows(r: Results) -> list:
    rows = []
    for j, run in r.floors.items():
        if run is None:
            rows.append(f"| bare `runc run`, {plural(j, 'worker')} back to back | missing | | | | "
                        "| |")
            continue
        lat = [us / 1000 for us in run["to_response_us"]]
        rows.append(f"| bare `runc run`, {plural(j, 'worker')} back to back | {rate(run):.1f} | "
                    f"1.00× | {run['ok']} | {run['failed']} | {fmt(percentile(lat, 50))} ms | "
                    f"{fmt(percentile(lat, 99))} ms |")
    for pool in POOLS:
        for c in CLIENTS:
            rows.append(load_row(f"faasd `--warm {pool}`, {plural(c, 'client')}",
                                 r.loads[(pool, c)], r.floor_for(c)))
    for reuse, (run, _) in r.hello_c.items():
        rows.append(load_row(hello_c_label(reuse), run, r.floors[10]))
    return rows


def starts(r: Results) -> list:
    """How the hello-c requests were served, from faasd's counters after each run."""
    parts = []
    for reuse, (_, described) in r.hello_c.items():
        rt = (described or {}).get("runtime", {})
        if "requests" not in rt:
            continue
        parts.append(f"`--reuse {reuse}`: {rt['requests']} requests, "
                     f"{rt.get('cold_starts', 0)} cold")
    if not parts:
        return []
    return ["", "faasd's counters after each hello-c run (`faas describe`; cold: served by a",
            f"container started for the request, not a ready one): {'; '.join(parts)}."]


def seconds_row(label: str, values: list, base: float, of: str = "", unit: str = "s",
                digits: int = 2) -> str:
    """Median, min and max of `values` (s, or `unit`), the median as a ratio to `base`
    (followed by `of`, what base is; no ratio when `base` is None)."""
    if not values:
        return f"| {label} | missing | | | |"
    m = statistics.median(values)
    cells = " | ".join(f"{v:.{digits}f} {unit}" for v in (m, min(values), max(values)))
    cell = "" if base is None else ratio(m, base) + (f" {of}" if of and base else "")
    return f"| {label} | {cells} | {cell} |"


def mib_row(label: str, values: list, base=None, of: str = "") -> str:
    return seconds_row(label, values, base, of, unit="MiB", digits=1)


def deploy_rows(d: Deploy) -> list:
    """The table of one image: its deploys against tar -x, the redeploys against the first
    deploy, then the disk of its functions and faasd's peak RSS."""
    tar, first = d.median(d.tar) if d.tar else 0, d.median(d.first) if d.first else 0
    of_first = "the first deploy"
    rows = [seconds_row("first deploy: `faas new`", d.first, tar, "tar -x")]
    if d.first and d.imports[0]:
        rows.append(seconds_row("of which faasd's import (its log)", d.imports[0], tar,
                                "tar -x"))
    rows.append(seconds_row("`tar -x` of the archive, then of each of its layers", d.tar, tar))
    if d.tar_layers:
        rows.append(seconds_row("`tar -x` of the layers alone", d.tar_layers, tar, "tar -x"))
    for label, values, imports in (
            ("redeploy with a changed top layer: `faas new` of v2", d.redeploy, d.imports[1]),
            ("identical redeploy: `faas new` of v2 again", d.same, d.imports[2])):
        rows.append(seconds_row(label, values, first, of_first))
        if values and imports:
            rows.append(seconds_row("of which faasd's import (its log)", imports, first,
                                    of_first))
    n = d.disk[0]["functions"] if d.disk else 10
    state = [run["state_kb"] / KB_PER_MIB for run in d.disk]
    alone = [sum(run["function_kb"]) / KB_PER_MIB for run in d.disk]
    layers = [run["layers_kb"] / KB_PER_MIB for run in d.disk if run.get("layers_kb") is not None]
    rows.append(mib_row(f"disk of {n} functions from the archive: faasd's state dir "
                        "(`du -sk`, a file linked from several places counted once)", state,
                        statistics.median(alone) if alone else 0, "the sum below"))
    rows.append(mib_row(f"disk of the {n} functions: `du -sk` of each one's directory alone, "
                        "summed", alone))
    if layers:
        rows.append(mib_row("of which the state dir's `layers/` (`du -sk`)", layers))
    rows.append(mib_row("faasd's peak RSS after the first deploy (VmHWM)", d.hwm_mib))
    rows.append(mib_row("faasd's peak RSS after all deploys of the run (VmHWM)",
                        [run["vmhwm_kb"] / KB_PER_MIB for run in d.disk]))
    return rows


def deploy_image_section(d: Deploy) -> list:
    about, v2 = DEPLOY_ABOUT[d.image]
    if d.facts:
        layers = d.facts["layers"]
        size = (f"a {d.facts['archive_bytes'] / 1e6:.0f} MB archive, "
                f"{plural(len(layers), 'layer')} holding "
                f"{sum(layer['entries'] for layer in layers)} tar entries")
    else:
        size = "size not recorded"
    failed = f"; {plural(d.failed, 'timed step')} failed" if d.failed else ""
    table = paragraph(
        f"**{d.label[0].upper()}{d.label[1:]}** ({size}): {about}. Its v2: {v2}. "
        f"{plural(d.runs, 'run')}{failed}.") + [
        f"| {d.label} | median | min | max | ratio |",
        "|---|---|---|---|---|",
        *deploy_rows(d),
        "",
    ]
    if d.first and d.imports and d.imports[0]:
        rest = d.median(d.first) - d.median(d.imports[0])
        table += paragraph(
            f"Beyond faasd's import, a first deploy of {d.label} took {rest:.2f} s (medians) "
            "that do not grow with the image and that `tar -x` does not have: the client "
            "(its start and the upload's requests) and the start check, one container of "
            "the new version started and, with no pool asked for, stopped before the "
            "answer.")
    return table


def pull_rows(r: Results) -> list:
    skopeo = statistics.median(r.pull["skopeo"]) if r.pull["skopeo"] else 0
    return [seconds_row(label, values, skopeo) for label, values in (
        ("`faas new --image`, every layer downloaded", r.pull["faas"]),
        ("`faas new --image` after `faas rm`, layers cached", r.pull["cached"]),
        ("`faas new` of the archive (above)", r.deploys["big"].first),
        ("`skopeo copy` to a directory", r.pull["skopeo"]))]


def push_rows(r: Results) -> list:
    skopeo = statistics.median(r.pull["skopeopush"]) if r.pull["skopeopush"] else 0
    return [seconds_row(label, values, skopeo) for label, values in (
        ("`faas push`: layer written and uploaded", r.pull["push"]),
        ("`faas push` again, another tag: layer from the cache, nothing sent",
         r.pull["pushagain"]),
        ("`skopeo copy` of the archive", r.pull["skopeopush"]))]


# The calls of a deploy that touch the files of an image, in the order of the path.
FS_CALLS = ["read", "pwrite64", "write", "copy_file_range", "openat", "openat2", "mkdirat",
            "symlinkat", "linkat", "newfstatat", "fchown", "fchmod", "utimensat", "unlinkat",
            "getdents64", "renameat2", "close"]


def strace_counts(path: Path) -> dict:
    """Calls by name from `strace -c` output: {name: (calls, errors, seconds)}."""
    counts = {}
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            errors = int(fields[4]) if len(fields) == 6 else 0
            counts[fields[-1]] = (int(fields[3]), errors, float(fields[1]))
    return counts


def syscall_section(r: Results) -> list:
    d = r.deploys["debian"]
    first = strace_counts(r.path / "deploy-debian-syscalls-first.txt")
    redeploy = strace_counts(r.path / "deploy-debian-syscalls-redeploy.txt")
    if not first or not d.facts:
        return paragraph("Where a deploy's time goes: missing (no `strace -c` of a deploy).")
    entries = sum(layer["entries"] for layer in d.facts["layers"])
    rows = ["| call | first deploy: calls | per tar entry | of which failed | redeploy: calls |",
            "|---|---|---|---|---|"]
    for name in FS_CALLS:
        calls, errors, _ = first.get(name, (0, 0, 0.0))
        again = redeploy.get(name, (0, 0, 0.0))[0]
        if calls or again:
            rows.append(f"| `{name}` | {calls} | {calls / entries:.2f} | {errors} | {again} |")
    return paragraph(
        f"Where the time of a deploy of {d.label} goes ({entries} tar entries), from "
        "`strace -c -f` on faasd during a first deploy and then a redeploy of v2 (untimed: "
        "strace slows every call). Per entry, a first deploy writes the file once as its "
        "layer streams in (`openat` with `O_EXCL`, the data, `fchown`, `fchmod`, "
        "`utimensat`, `close`: what `tar -x` does) and links it into the version's tree "
        "(`linkat`); a directory is made twice (in the layer and in the tree). The redeploy "
        "reads the archive (its base layer is skipped unread, by its digest), links the "
        "stored base into the new tree and writes only the top layer. The importer before "
        "the layer store made, on the test suite's python image (7,754 entries), 1.12 "
        "`openat2` per entry (each entry's parent looked up from the root), 1.01 failed "
        "`newfstatat` (the way cleared before every create, in a tree where nothing was "
        "there yet), a spool copy of every layer (0.81 `copy_file_range` per entry), and "
        "unpacked every layer again on every deploy: the parent's fd is now kept from one "
        "entry to the next, the way is cleared only when a create finds the name taken, "
        "layers are extracted as they arrive instead of spooled, and a stored layer is "
        "linked rather than unpacked.") + rows + [""]


def deploy_section(r: Results) -> list:
    text = paragraph(
        "Two images, each deployed into a faasd started for the run: as a new function, then "
        "under the same name its v2, whose lower layers are the same and whose top layer "
        "differs (a redeploy with a changed top layer), then v2 again (an identical redeploy: "
        "nothing new in it). The first deploy is compared with `tar -x` of the archive "
        "followed by `tar -x` of each of its layers in the manifest's order, on the same disk "
        "right after; the redeploys with the first deploy. Then the function is removed and "
        "10 functions are deployed from the archive: `du` of faasd's state dir counts a file "
        "they share once, `du` of each function's directory alone counts it for each. The "
        "times include the client and faasd's start check.")
    for d in r.deploys.values():
        text += deploy_image_section(d)
    return text + syscall_section(r)


def memory_rows(r: Results) -> list:
    rows = []
    if r.hwm_mib:
        rows.append(f"| peak RSS during a deploy (VmHWM after the first deploy, highest of "
                    f"{len(r.hwm_mib)} runs of both images) | {max(r.hwm_mib):.1f} |")
    else:
        rows.append("| peak RSS during a deploy | missing |")
    if r.many:
        rows += [f"| RSS just after start (VmRSS) | {r.many['vmrss_start_kb'] / KB_PER_MIB:.1f} |",
                 f"| RSS with {r.many['functions']} functions deployed with `--warm 0` (VmRSS) | "
                 f"{r.many['vmrss_kb'] / KB_PER_MIB:.1f} |"]
    else:
        rows.append("| RSS with many functions | missing |")
    return rows


def pull_section(r: Results) -> list:
    return [
        "Deploys of the big image by reference from docker-registry on loopback (pushed",
        "there with `skopeo copy`), each into a fresh faasd, then again after `faas rm`",
        "(every layer from faasd's layer cache), against `skopeo copy` of the image to a",
        "directory; the start check included, as for the archive.",
        "",
        "| | median | min | max | × skopeo copy |",
        "|---|---|---|---|---|",
        *pull_rows(r),
        "",
        "The deployed version pushed to an empty registry on loopback (`faas push`: its",
        "tree as one gzip layer, a config and a manifest), against `skopeo copy` of the",
        "archive to the same empty registry (its two layers compressed on the way).",
        "",
        "| | median | min | max | × skopeo copy |",
        "|---|---|---|---|---|",
        *push_rows(r),
        "",
    ]


class PoolMemory:
    """PSS and RSS (MiB) per pooled container, averaged over the containers read."""

    def __init__(self, reading: dict):
        self.function = reading["function"]
        self.containers = reading["containers"]
        n = len(self.containers)
        self.n = n

        def mean(part: str, key: str) -> float:
            return sum(c[part][key] for c in self.containers) / n / KB_PER_MIB

        self.runc, self.handler = mean("runc", "pss_kb"), mean("handler", "pss_kb")
        self.pss = self.runc + self.handler
        self.rss = mean("runc", "rss_kb") + mean("handler", "rss_kb")


def pool_memory_rows(r: Results) -> list:
    if not r.pool_memory or not r.pool_memory.get("containers"):
        return ["Memory per pooled container: missing (not measured in this run)."]
    m = PoolMemory(r.pool_memory)
    return [
        f"| pooled container of {m.function} (`--warm 1`), mean of {plural(m.n, 'container')} "
        "| PSS, MiB |",
        "|---|---|",
        f"| `runc run`, waiting for its container to exit | {m.runc:.2f} |",
        f"| the handler (`tests/handlers/hello`), waiting for its client | {m.handler:.2f} |",
        f"| **memory per pooled container** (runc + handler) | **{m.pss:.2f}** |",
        "",
        "PSS counts each shared page in part, split among all the processes that map it (so",
        "runc's code is shared with every other `runc run` on the machine); RSS, which counts",
        f"shared pages in full, was {m.rss:.2f} MiB for the same processes. Not included: the",
        "kernel's memory for the container (its namespaces, cgroup and page tables) and",
        "faasd's own per-container state.",
    ]


def runtime_rows(label: str, by_runtime: dict) -> list:
    """Two rows (runc, crun) and the ratio row crun/runc of one path."""
    runc, crun = (Series(f"{label}, {rt}", by_runtime[rt]) for rt in RUNTIMES)
    rows = [runc.row(), crun.row()]
    cells = [ratio(crun.p(q), runc.p(q)) for q in (50, 90, 99)]
    rows.append(f"| **{label}, crun / runc** | {' | '.join(f'**{c}**' for c in cells)} | | |")
    return rows


def runtimes_section(r: Results) -> list:
    head = ["## runc and crun", ""]
    if r.vm_facts is None:
        return head + [
            f"Not measured in this run: `{VM_COMMAND}` boots the vmtest guest (qemu, cgroup v2)",
            "and measures faasd with `--runtime runc` and `--runtime crun` there. crun refuses",
            "a host whose cgroups are in hybrid mode, as this one's are.",
            ""]
    v = r.vm_facts
    cold = {rt: percentile(r.vm_cold[rt], 50) for rt in RUNTIMES}
    cgroup = "cgroup v2" if v["cgroup"] == "cgroup2fs" else v["cgroup"]
    accel = {"tcg": "TCG (no KVM)", "kvm": "KVM"}.get(r.vm_machine.get("accel"),
                                                      "unknown acceleration")
    return head + [
        "crun refuses this host's hybrid cgroups, so this comparison runs in the vmtest guest",
        f"(`{VM_COMMAND}`; docs/VMTEST_GUIDE.md): qemu with {accel}, {v['nproc']} vCPUs,",
        f"kernel {v['kernel']}, {cgroup}; {v['runc']}, {v['crun']}. In a guest (under TCG",
        "every exec and page fault is many times slower than on the host) only the ratios",
        "mean anything; crun's own figures put it at about half of runc's time per container.",
        "",
        "| path | p50 | p90 | p99 | requests | floor |",
        "|---|---|---|---|---|---|",
        *runtime_rows("bare run, to the response's EOF", r.vm_bare),
        *runtime_rows("bare run, to the runtime's exit", r.vm_bare_exit),
        *runtime_rows("faasd cold path (`--warm 0`)", r.vm_cold),
        "",
        f"faasd's cold path with crun takes {ratio(cold['crun'], cold['runc'])} the time it "
        "takes with runc (p50)"
        + (f"; {plural(r.vm_failed, 'run')} failed." if r.vm_failed else "."),
        "The bare runs are bench/floor's request cycle (see Method) with the same `config.json`",
        "and rootfs for both runtimes; the cold path is the hello handler deployed with",
        "`--warm 0` into one faasd per runtime, each started only for its own block. Bare runc,",
        "faasd with runc, bare crun and faasd with crun take turns in blocks, so a drift in",
        "the machine's speed reaches them alike.",
        "",
    ]


def cluster_deploy_rows(c: dict) -> list:
    rows = []
    for key, label in (("deploy", "`faas new NAME --image REF` of a new function"),
                       ("redeploy", "redeploy of it with a new setting (`--env RUN=i`)")):
        d = c.get(key)
        if not d:
            rows.append(f"| {label} | missing | | | |")
            continue
        cli = [run["cli_s"] for run in d["runs"]]
        rows.append(f"| {label}: to ready on every node and routed to each | "
                    f"{d['median_s']:.2f} s | {min(d['ready_s']):.2f} s | "
                    f"{max(d['ready_s']):.2f} s | {len(d['ready_s'])} |")
        rows.append(f"| of which `faas new` itself, to n1's answer | {statistics.median(cli):.2f} s "
                    f"| {min(cli):.2f} s | {max(cli):.2f} s | {len(cli)} |")
    return rows


def cluster_load_rows(load: dict) -> list:
    rows = []
    setups = load.get("setups", {})
    one = setups.get("1", {}).get("median_rps")
    for label, v in setups.items():
        ratio_cell = ratio(v["median_rps"], one) if one else "–"
        per_node = ", ".join(f"{name} {v['served_median'][name]:.0f} "
                             f"({100 * v['share'][name]:.0f} %)" for name in v["serving"])
        idle = sum(v["served_median"][name] for name in v["served_median"]
                   if name not in v["serving"])
        if idle:
            per_node += f"; the others {idle:.0f}"
        p50 = f"{fmt(v['p50_ms'])} ms" if v.get("p50_ms") is not None else "–"
        rows.append(f"| {v['nodes']} ({', '.join(v['serving'])}) | {v['max_concurrency']} | "
                    f"{v['median_rps']:.1f} | {ratio_cell} | "
                    f"{', '.join(f'{x:.1f}' for x in v['rps'])} | {v['failed']} | {per_node} | "
                    f"{p50} |")
    return rows


def paragraph(text: str) -> list:
    """`text` wrapped as the page's hand-written paragraphs are, then a blank line."""
    return textwrap.wrap(text, width=88, break_on_hyphens=False) + [""]


def cluster_starts(load: dict) -> list:
    """How the requests were served, from the serving nodes' counters around each run."""
    setups = load.get("setups", {}).values()
    warm = sum(v.get("warm_starts", 0) for v in setups)
    cold = sum(v.get("cold_starts", 0) for v in setups)
    if not warm + cold:
        return []
    text = (f"Of the {warm + cold} requests of all runs, {warm} were handed a ready container "
            f"and {cold} started their own (faasd's `warm_starts` and `cold_starts` on the "
            "serving nodes)")
    if warm < 0.2 * (warm + cold):
        text += (": under this load a node's pool is empty most of the time, so the rate is "
                 "that of container starts, as on the cold path")
    return paragraph(text + ".")


def cluster_section(c, nproc) -> list:
    head = ["## Cluster", ""]
    if c is None:
        return head + paragraph(
            "Not measured in this run: bench/cluster.py did not run (no `cluster.json`; it runs "
            "last, and only when everything before it succeeded).")
    load = c.get("load") or {}
    runs = {k: len((c.get(k) or {}).get("ready_s", [])) for k in ("deploy", "redeploy")}
    how = ("How: `bench/cluster.py` deploys the hello handler by reference from the cluster's "
           "registry through n1, timed from `faas new` until every node reports the version "
           f"ready and the router has a path to each ({plural(runs['deploy'], 'new function')}, "
           f"then {plural(runs['redeploy'], 'redeploy')} of one with `--env RUN=i`).")
    if "setup_s" in c and "took_s" in c:
        how += f" The part took {c['took_s']:.0f} s, {c['setup_s']:.0f} s of them to start the "
        how += "cluster."
    text = head + paragraph(
        "faasd as a cluster: three nodes (`faasd --cluster`), each with its own etcd member and "
        "bird2, behind a bird2 router that spreads the connections to a function's address over "
        "the nodes announcing it (ECMP, L4 hash), and a client machine routed through the "
        "router. It is the test suite's cluster (`tests/lib/cluster.py`): every machine is a "
        "network namespace on this host, and each node's faasd runs as the tests start it "
        "(debug logging).") + paragraph(how)
    if c.get("error"):
        text += paragraph(f"**The cluster part failed**: `{c['error'].splitlines()[0][:300]}`. "
                          "Below is what it measured before.")
    text += [
        "| deploy through n1 (hello, `--image`) | median | min | max | runs |",
        "|---|---|---|---|---|",
        *cluster_deploy_rows(c),
        "",
    ]
    if not load.get("runs"):
        return text + ["Requests/s with 1, 2 and 3 nodes serving: not measured.", ""]
    ratios = load.get("ratios", {})
    default, control = load.get("max_concurrency"), load.get("control_max_concurrency")
    ratio_text = " and ".join(f"{k.split('/')[0]} nodes / 1 node = {v:.2f}×"
                              for k, v in sorted(ratios.items()) if k.endswith("/1"))
    control_text = " and ".join(f"{k.split('/')[0]} nodes = {v:.2f}×"
                                for k, v in sorted(ratios.items()) if not k.endswith("/1"))
    text += paragraph(
        "Requests/s through the router with 1, 2 and 3 nodes serving one function, the hello "
        f"handler with `--warm {load['warm']} --warm-max {load.get('warm_max', '?')}` (each "
        "serving node starts a run with one ready container, not with as many as a pool grown "
        "by the run before holds). For N nodes the birds of the others are stopped until the "
        "router's next hops are exactly the N; then bench/loadgen on the client machine, "
        f"{load['clients']} closed-loop clients, each request on a new connection, "
        f"{load['seconds']:g} s; {plural(load.get('repetitions', 0), 'round')} of the four rows "
        "in turn, medians. Requests per node: the request records in each node's log of the "
        "function (`faas logs --stream request --json`) dated within the run.")
    if control:
        text += paragraph(
            f"A node serves at most `--max-concurrency` requests of a function at once ({default} "
            "by default, 4 × cores) and queues the rest, so more nodes also serve more at once. "
            f"The second row, a control, is one node with `--max-concurrency {control}`, as many "
            "as the three nodes together: the ratios to it leave that out.")
    text += [
        "| nodes serving | at once per node | requests/s | × 1 node | runs | failed "
        "| requests per node | p50 |",
        "|---|---|---|---|---|---|---|---|",
        *cluster_load_rows(load),
        "",
        *cluster_starts(load),
    ]
    text += paragraph(
        f"**The nodes share this machine's {nproc or 'few'} cores** (with etcd, the birds, the "
        "router and the client): a second or third node adds no CPU here, so the ratios "
        f"({ratio_text or 'above'}"
        + (f"; to the control, {control_text}" if control_text else "")
        + ") are no scale-out figure. They show that the router spreads the connections over "
        "the nodes that serve, and what spreading them costs: a ratio to the control near "
        "1.00× means it costs little. On machines of their own, each node would bring its own "
        "CPU.")
    return text


def method(r: Results) -> list:
    return [
        "Everything that starts faasd or sends a request runs in a network and mount namespace",
        "of its own (`unshare --net --mount`, loopback only), with private state and run",
        "directories under `/var/tmp` that are removed afterwards. Two small C programs do",
        "the timing with `CLOCK_MONOTONIC`, so no interpreter start-up is measured:",
        "`bench/floor` (`posix_spawn`, and the bare runc cycle) and `bench/loadgen` (client",
        "threads; one request is connect, GET with `Connection: close`, read to EOF). faasd",
        "runs with its defaults, logging to a file; the handler is `tests/handlers/hello`",
        "(static C, `FROM scratch`).",
        "",
        "- Floors: `/bin/true` and `unshare -fpmiun true`, each spawned and waited for; and bare",
        "  `runc run` doing what faasd does for one connection: connect a TCP client over",
        "  127.0.0.1 and send the GET, create a bundle directory with faasd's `config.json` and",
        "  a listening `control.sock`, `runc run`, accept the handler's connection, send it the",
        "  server end with `SCM_RIGHTS` and the payload `SOCKET`, read the response to EOF (the",
        "  figure faasd is compared with), wait for runc's exit (also shown), remove the bundle.",
        "  `config.json` is copied from the bundle of hello-warm's pooled container (deployed",
        "  with `--warm 1`); only the control socket's bind-mount source and `cgroupsPath`",
        "  (unique per run) are rewritten.",
        "- Cold path: the hello handler deployed with `--warm 0`, one request after the other.",
        "- Warm path: the same handler deployed with `--warm 1`. Before each timed",
        "  request the client polls `GET /api/functions/NAME` (what `faas describe` shows)",
        "  every 2 ms until `runtime.pool_ready` ≥ 1, for at most 5 s, so each request finds",
        "  a ready container; only the round trip is timed.",
        "- Bare runc, cold and warm run in turns, in blocks of a fifth of the requests each, so",
        "  a drift in the machine's speed reaches them alike.",
        "- Throughput: 1, 10 and 50 closed-loop clients for 10 s per row; requests/s counts",
        "  status 200 only; errors are failed connects, resets or timeouts (io) and any other",
        "  status. The back-to-back rate is the runc floor run by 1 and by 10 workers, 10 s",
        "  each, right before faasd at the same concurrency.",
        "- Reuse: the C SDK's example (`examples/hello-c`, whose `faas_serve()` loop serves up",
        "  to `FAAS_REUSE` clients in turn) deployed with `--reuse 1 --warm 1` and then with",
        f"  `--reuse {REUSE} --warm 1`, each with 10 closed-loop clients for 10 s right after the",
        "  10-client rows above, and removed after its run; faasd's other settings are its",
        "  defaults (`--max-concurrency` 4 × cores, `--warm-max` 8).",
        "- Memory per pooled container: after the latency blocks, once hello-warm's pool is",
        "  full again, `bench/pool_memory.py` finds its pooled containers (bundles whose root is",
        "  hello-warm's image) and sums `Pss` from `/proc/PID/smaps_rollup` of each one's",
        "  `runc run` process and of the handler under it.",
        "- Deploy: two images, made by `bench/deploy_images.sh` and saved with `podman save`",
        "  (docker-archive): the big one, two layers of random files (about 25 MB each), and a",
        "  Debian one, `mmdebstrap --variant=minbase --include=python3-minimal bookworm` into a",
        "  directory (this machine's apt sources; no manuals, translations or docs, as",
        "  `sdk/tools/faas-python-base` makes its base), `tar` of it imported with",
        "  `podman import`, and `COPY handler /handler` on top with `podman build`. Each has",
        "  a v2 built on the same lower layers: big with one small file of its second layer",
        "  changed, Debian with the handler built with `-Os`. Each run and image has a faasd",
        "  of its own: `faas new NAME` of the archive (the client included), its VmHWM read",
        "  then; `faas new NAME` of v2 (a redeploy with a changed top layer); the same again",
        "  (an identical redeploy); `faas rm NAME`, then 10 functions from the archive and",
        "  `du -sk` of the state dir against `du -sk` of each function's directory, each run",
        "  on its own and summed. Then, on the same disk, one timed process runs `tar -xf` of",
        "  the archive into one directory and `tar -xf` of each of its layers, in the",
        "  manifest's order, into another; for the big image also `tar -x` of its layers",
        "  alone. Each timed step is one process spawned by `bench/floor` (under `timeout`)",
        "  after a `sync`, so that what the steps before left to write does not slow it; big",
        "  and Debian take turns, 5 runs each, medians. faasd's own import time is read",
        "  from its log. RSS with many functions: VmRSS of a fresh faasd after 100 deploys of",
        "  the hello image with `--warm 0` (no containers kept).",
        "",
        "Percentiles are nearest-rank; MB in the targets is read as MiB. With few cores, the",
        "client, faasd, runc and the handlers share them, as they would on such a machine in",
        "production; other load on the machine shows up as noise, so compare figures of one run.",
    ]


def logging_rows(r: Results) -> list:
    """Warm latency and throughput of hello-c, quiet and chatty, the chatty one as a
    ratio to the quiet one."""
    (quiet, quiet_load), (chatty, chatty_load) = (r.logging[0], r.logging[CHATTY_LINES])
    rows = []
    for series, run, base, base_run in ((quiet, quiet_load, None, None),
                                        (chatty, chatty_load, quiet, quiet_load)):
        if not series.samples or run is None:
            rows.append(f"| {series.label} | missing | | | |")
            continue
        cells = []
        for q in (50, 90):
            cell = f"{fmt(series.p(q))} ms"
            if base is not None and base.samples:
                cell += f" ({ratio(series.p(q), base.p(q))})"
            cells.append(cell)
        load_cell = f"{rate(run):.1f}"
        if base_run is not None:
            load_cell += f" ({ratio(rate(run), rate(base_run))})"
        rows.append(f"| {series.label} | {' | '.join(cells)} | {load_cell} | {errors(run)} |")
    return rows


def logging_section(r: Results) -> list:
    requests = len(r.logging[0][0].samples)
    return [
        "## Function logs and metrics",
        "",
        "What the per-function log and the metrics cost on the request path: the C SDK's",
        f"example with `--warm 1`, once quiet and once writing {CHATTY_LINES} lines to stdout",
        "per request (`HELLO_LOG_LINES`), each line kept in the function's log; `/metrics`",
        f"is scraped every second during both. Warm latency over {requests} requests (each",
        "sent once a container is ready), then 10 clients for 10 s; in parentheses, the",
        "chatty run as a ratio to the quiet one.",
        "",
        "| handler | warm p50 | warm p90 | requests/s, 10 clients | errors |",
        "|---|---|---|---|---|",
        *logging_rows(r),
        "",
    ]


def page(r: Results) -> str:
    f = r.facts
    return "\n".join([
        "# Performance",
        "",
        "What a request to faasd costs next to what the machine cannot avoid, measured",
        f"in one run of `{COMMAND}`. This page and the plots in `img/` are written by",
        "`bench/report.py`; the raw samples stay in `bench/results/` after a run. Latencies",
        "are per request, measured by the client; in parentheses, the same percentile as a",
        "ratio to the floor named in the last column.",
        "",
        "faasd's default is the cold path (`--warm 0`): each request starts its container.",
        "The warm path is one flag away: `faasd --warm 1` for every function, or",
        "`faas new NAME --warm 1` for one, keeps a container per function started ahead",
        "with its handler waiting, at the cost of that container's memory (below).",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *target_rows(r),
        "",
        "## Latency",
        "",
        "| path | p50 | p90 | p99 | requests | floor |",
        "|---|---|---|---|---|---|",
        *[s.row() for s in r.latency],
        *warm_caveat(r),
        "",
        "![latency](img/latency.png)",
        "",
        "## Throughput",
        "",
        "Closed loop: each client sends its next request when the last one has ended. faasd's",
        "ratio is to bare runc with 1 worker for 1 client, with 10 workers for 10 and 50. The",
        "last two rows are another handler, the C SDK's example, once with a fresh container",
        f"per request and once with `--reuse {REUSE}` (one container serves up to {REUSE} clients",
        "in turn: weaker isolation, for trusted functions).",
        "",
        "| load | requests/s | × runc | ok | errors | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
        *throughput_rows(r),
        *starts(r),
        "",
        "![throughput](img/throughput.png)",
        "",
        *logging_section(r),
        "## Deploy and memory",
        "",
        *deploy_section(r),
        *pull_section(r),
        "| faasd memory | MiB |",
        "|---|---|",
        *memory_rows(r),
        "",
        "What `--warm` costs: every pooled container is a `runc run` process and a handler",
        "waiting for a client, for each function and each container in its pool.",
        "",
        *pool_memory_rows(r),
        "",
        "![deploy and memory](img/deploy.png)",
        "",
        *runtimes_section(r),
        *cluster_section(r.cluster, f.get("nproc")),
        "## Method",
        "",
        *method(r),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| date | {f['date']} |",
        f"| CPUs (nproc) | {f['nproc']} ({f['cpu']}) |",
        f"| memory | {f['mem_gib']} GiB |",
        f"| OS, kernel | {f['os']}, {f['kernel']} |",
        f"| runc | {f['runc']} |",
        f"| faasd | {f['faasd']} |",
        "",
    ])


# ---- plots ------------------------------------------------------------------------------------

def plot_latency(r: Results, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in r.latency:
        if s.samples:
            xs = sorted(s.samples)
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                    label=s.label.replace("`", ""))
    ax.set_xscale("log")
    ax.set_xlabel("latency per request (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency: floors and faasd (cumulative)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(r: Results, path: Path) -> None:
    fig, (ax, reuse_ax) = plt.subplots(1, 2, figsize=(11, 4.5),
                                       gridspec_kw={"width_ratios": (3, 1.3)})
    width = 0.38
    for k, pool in enumerate(POOLS):
        xs = [i + (k - 0.5) * width for i in range(len(CLIENTS))]
        runs = [r.loads[(pool, c)] for c in CLIENTS]
        bars = ax.bar(xs, [rate(run) for run in runs], width, label=f"faasd --warm {pool}")
        ax.bar_label(bars, labels=[f"{rate(run):.0f}" if run else "not measured" for run in runs],
                     fontsize=8)
    for j, style in ((1, ":"), (10, "--")):
        ax.axhline(rate(r.floors[j]), color="black", linestyle=style, linewidth=1,
                   label=f"bare runc run, {plural(j, 'worker')} back to back")
    ax.set_xticks(range(len(CLIENTS)), [plural(c, "client") for c in CLIENTS])
    ax.margins(y=0.15)
    ax.set_ylabel("requests/s (status 200)")
    ax.set_title("Throughput, closed loop (hello handler)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)

    # The C SDK's example at 10 clients, without and with reuse; log scale, as the two
    # differ by orders of magnitude.
    runs = [run for run, _ in r.hello_c.values()]
    bars = reuse_ax.bar(range(len(runs)), [max(rate(run), 1) for run in runs], 0.6,
                        color=["tab:purple", "tab:red"])
    reuse_ax.bar_label(bars, labels=[f"{rate(run):.0f}" if run else "not measured"
                                     for run in runs], fontsize=8)
    floor = rate(r.floors[10])
    reuse_ax.axhline(floor, color="black", linestyle="--", linewidth=1,
                     label="bare runc run, 10 workers")
    reuse_ax.axhline(REUSE_TARGET * floor, color="red", linestyle="--", linewidth=1,
                     label=f"target: {REUSE_TARGET} × that")
    reuse_ax.set_yscale("log")
    reuse_ax.set_ylim(1, 4 * max([rate(run) for run in runs] + [REUSE_TARGET * floor, 1]))
    reuse_ax.set_xticks(range(len(runs)), [f"--reuse {reuse}" for reuse in r.hello_c])
    reuse_ax.set_ylabel("requests/s (log scale)")
    reuse_ax.set_title("hello-c, 10 clients, --warm 1")
    reuse_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_deploy(r: Results, path: Path) -> None:
    fig, (times, disk, right) = plt.subplots(1, 3, figsize=(13, 4.5),
                                             gridspec_kw={"width_ratios": (2.2, 1.2, 1)})
    steps = (("faas new", "first", "tab:blue"), ("tar -x archive + layers", "tar", "tab:gray"),
             ("redeploy, new top layer", "redeploy", "tab:orange"),
             ("identical redeploy", "same", "tab:green"))
    deploys = list(r.deploys.values())
    width = 0.8 / len(steps)
    for k, (label, key, color) in enumerate(steps):
        values = [getattr(d, key) for d in deploys]
        medians = [statistics.median(v) if v else 0 for v in values]
        spread = [[m - min(v) if v else 0 for m, v in zip(medians, values)],
                  [max(v) - m if v else 0 for m, v in zip(medians, values)]]
        xs = [i + (k - (len(steps) - 1) / 2) * width for i in range(len(deploys))]
        times.bar(xs, medians, width, yerr=spread, capsize=3, color=color, label=label)
        for x, m, v in zip(xs, medians, values):  # above the error bar, not in it
            times.annotate(f"{m:.2f}" if v else "–", (x, max(v, default=0)), fontsize=7,
                           ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")
    times.set_xticks(range(len(deploys)), [d.label.removeprefix("the ") for d in deploys])
    times.set_ylabel("seconds (median; min to max)")
    times.set_title("Deploys, each image into a fresh faasd")
    times.legend(fontsize=8)
    times.margins(y=0.15)

    width = 0.38
    for k, (label, color) in enumerate((("state dir (shared files once)", "tab:blue"),
                                        ("each function alone, summed", "tab:gray"))):
        mib = [statistics.median([(run["state_kb"] if k == 0 else sum(run["function_kb"]))
                                  / KB_PER_MIB for run in d.disk]) if d.disk else 0
               for d in deploys]
        bars = disk.bar([i + (k - 0.5) * width for i in range(len(deploys))], mib, width,
                        color=color, label=label)
        disk.bar_label(bars, fmt="%.0f", fontsize=7)
    n = next((d.disk[0]["functions"] for d in deploys if d.disk), 10)
    disk.set_xticks(range(len(deploys)), [d.label.removeprefix("the ") for d in deploys])
    disk.set_ylabel("MiB (du -sk)")
    disk.set_title(f"Disk of {n} functions from one image")
    disk.legend(fontsize=8, loc="upper left")
    disk.margins(y=0.25)

    labels = ["peak during deploy", f"{r.many['functions'] if r.many else 100} functions"]
    mem = [max(r.hwm_mib, default=0), r.many["vmrss_kb"] / KB_PER_MIB if r.many else 0]
    bars = right.bar(labels, mem, color=["tab:blue", "tab:green"])
    right.bar_label(bars, labels=[f"{m:.1f} MiB" if m else "not measured" for m in mem],
                    fontsize=8)
    right.hlines([HWM_TARGET_MIB, 20], [-0.4, 0.6], [0.4, 1.4], colors="red", linestyles="--",
                 label="target")
    right.set_ylabel("faasd RSS (MiB)")
    right.set_title("faasd memory")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results, docs = Path(argv[1]), Path(argv[2])
    r = Results(results)
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    plot_latency(r, img / "latency.png")
    plot_throughput(r, img / "throughput.png")
    plot_deploy(r, img / "deploy.png")
    (docs / "PERFORMANCE.md").write_text(page(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
