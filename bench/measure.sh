#!/usr/bin/env bash
# The measuring half of bench/run.sh; it runs inside the network namespace that
# run.sh creates and refuses to run in the host's. Usage:
#   measure.sh WORK BIN_DIR BENCH_BIN
# WORK holds images/ (hello, hello-c, big and its layers) and receives
# results/*.json; BIN_DIR has faasd and faas; BENCH_BIN has floor and loadgen.
set -euo pipefail
work=${1:?usage: measure.sh WORK BIN_DIR BENCH_BIN}
bin=${2:?}
bench_bin=${3:?}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3

if [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ]; then
  echo "measure.sh: refusing to run in the host's network namespace (use bench/run.sh)" >&2
  exit 1
fi
ip link set lo up

images=$work/images
results=$work/results
mkdir -p "$results"
export PATH="$bin:$PATH"

# Request counts and time bounds of every loop below.
readonly kLatencyRequests=300 kLatencyBlocks=5 kSpawnRuns=1000 kLoadSeconds=10 kLoadMax=20000
readonly kReuseLoadMax=200000  # a container serving clients in turn answers far more
readonly kPoolWaitTenths=100   # how long a pool may take to be ready: 10 s
readonly kDeployRuns=5 kFunctions=100

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# start_faasd, stop_faasd, delete_containers
# shellcheck source=bench/faasd.sh
. "$here/faasd.sh"

# The floor's cgroups are per run and removed by runc; remove what a failure left.
remove_floor_cgroups() {
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -d "$h/faasd-bench" ] || continue
    find "$h/faasd-bench" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$h/faasd-bench" 2>/dev/null || true
  done
}

registry_pid=""
push_registry_pid=""
cleanup() {
  local status=$?
  # After a failure, keep the log of the faasd that was running.
  if [ "$status" != 0 ] && [ -n "$faasd_pid" ]; then
    cp "$faasd_dir/faasd.log" "$results/faasd-failed.log" 2>/dev/null || true
  fi
  stop_faasd
  [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
  [ -z "$push_registry_pid" ] || kill "$push_registry_pid" 2>/dev/null || true
  delete_containers "$work/floor/runc-root"
  remove_floor_cgroups
}
trap cleanup EXIT

vm_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# pool_state NAME: "READY TARGET STARTING", the pool fields of runtime in `faas describe
# NAME`; -1 for one faasd does not report, -2 for all when describe fails.
pool_state() {
  { faas describe "$1" 2>/dev/null || true; } | "$py" -c '
import json, sys
try:
    runtime = json.load(sys.stdin).get("runtime", {})
    print(*(runtime.get(k, -1) for k in ("pool_ready", "pool_target", "pool_starting")))
except ValueError:
    print(-2, -2, -2)'
}

# wait_pool NAME: until faasd shows the pool of NAME filled (pool_ready at least 1 and at
# least pool_target, none starting), for at most 10 s; else a message and failure.
wait_pool() {
  local ready=-2 target=-2 starting=-2
  for _ in $(seq "$kPoolWaitTenths"); do
    read -r ready target starting < <(pool_state "$1") || true
    if [ "$ready" -ge 1 ] && [ "$ready" -ge "$target" ] && [ "$starting" = 0 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "faasd showed no ready pooled container of $1 within $((kPoolWaitTenths / 10)) s" \
    "(runtime: pool_ready $ready, pool_target $target, pool_starting $starting;" \
    "-1: not reported, -2: describe failed)" >&2
  return 1
}

# ---- the functions ------------------------------------------------------------------
log "faasd for the latency and throughput runs"
start_faasd "$work/main"
state=$work/main/state
faas new hello-warm --warm 1 <"$images/hello.tar" >/dev/null
faas new hello-cold --warm 0 <"$images/hello.tar" >/dev/null
warm_ip=$(faas ip hello-warm)
cold_ip=$(faas ip hello-cold)
wait_pool hello-warm

# ---- faasd's own config.json, from the pooled container of hello-warm -------------------
# hello-cold keeps no container, so the one bundle is that of hello-warm's pool.
mkdir -p "$work/floor"
configs=("$state"/bundles/*/config.json)
if [ ! -e "${configs[0]}" ]; then
  echo "no bundle under $state/bundles to copy config.json from" >&2
  exit 1
fi
cp "${configs[0]}" "$work/floor/faasd-config.json"
"$py" "$here/oci_template.py" "$work/floor/faasd-config.json" "$work/floor/template.json"

# ---- latency: floors, then bare runc and faasd side by side -----------------------------
floor_runc() { "$bench_bin/floor" runc -T "$work/floor/template.json" -w "$work/floor" "$@"; }
log "floor: spawn /bin/true x $kSpawnRuns"
"$bench_bin/floor" spawn -n "$kSpawnRuns" -t 30 -- /bin/true >"$results/floor-true.json"
log "floor: unshare -fpmiun true x $kSpawnRuns"
"$bench_bin/floor" spawn -n "$kSpawnRuns" -t 60 -- unshare -fpmiun true >"$results/floor-unshare.json"
# Blocks of bare runc, faasd cold and faasd warm take turns, so a drift in the
# machine's speed (other load, frequency) reaches all three alike.
per_block=$((kLatencyRequests / kLatencyBlocks))
for b in $(seq "$kLatencyBlocks"); do
  log "latency block $b/$kLatencyBlocks: $per_block requests each to bare runc," \
    "faasd cold, faasd warm"
  floor_runc -n "$per_block" -t 60 >"$results/latency-runc-$b.json"
  "$bench_bin/loadgen" -a "$cold_ip" -c 1 -n "$per_block" -t 60 >"$results/latency-cold-$b.json"
  # Each request waits (untimed) for a ready container: up to 5 s per request.
  "$bench_bin/loadgen" -a "$warm_ip" -c 1 -n "$per_block" -t 60 \
    -R "$FAAS_SOCKET" -N hello-warm >"$results/latency-warm-$b.json"
done

# ---- memory per pooled container: what --warm costs ----------------------------------------
log "memory (PSS) of hello-warm's pooled container(s)"
wait_pool hello-warm
"$py" "$here/pool_memory.py" "$state" hello-warm >"$results/pool-memory.json"

# ---- throughput: the runc back-to-back rate, then faasd at the same concurrency ---------------
# hello_c NAME REUSE: the C SDK's example deployed with --reuse REUSE --warm 1, 10 clients;
# faasd's counters (warm and cold starts) are kept with the result, then it is removed.
hello_c() {
  faas new "$1" --reuse "$2" --warm 1 <"$images/hello-c.tar" >/dev/null
  wait_pool "$1"
  sleep 2
  log "throughput: hello-c --reuse $2 --warm 1, 10 clients, ${kLoadSeconds} s"
  "$bench_bin/loadgen" -a "$(faas ip "$1")" -c 10 -n "$kReuseLoadMax" -t "$kLoadSeconds" \
    >"$results/load-$1-c10.json"
  faas describe "$1" >"$results/describe-$1.json"
  faas rm "$1" >/dev/null
}

# chatty NAME LINES: hello-c with --warm 1 writing LINES lines to stdout per request
# (HELLO_LOG_LINES), while /metrics is scraped every second as Prometheus would: the
# warm latency of kLatencyRequests requests, then 10 clients for kLoadSeconds. What
# the function log and the metrics cost on the request path; then it is removed.
chatty() {
  local scraper
  faas new "$1" --warm 1 --env "HELLO_LOG_LINES=$2" <"$images/hello-c.tar" >/dev/null
  wait_pool "$1"
  for _ in $(seq 300); do
    curl -sf --unix-socket "$FAAS_SOCKET" -o /dev/null http://faasd/metrics || true
    sleep 1
  done &
  scraper=$!
  log "logging cost: hello-c writing $2 line(s) per request, warm latency"
  "$bench_bin/loadgen" -a "$(faas ip "$1")" -c 1 -n "$kLatencyRequests" -t 60 \
    -R "$FAAS_SOCKET" -N "$1" >"$results/latency-$1.json"
  sleep 2
  log "logging cost: hello-c writing $2 line(s) per request, 10 clients, ${kLoadSeconds} s"
  "$bench_bin/loadgen" -a "$(faas ip "$1")" -c 10 -n "$kLoadMax" -t "$kLoadSeconds" \
    >"$results/load-$1-c10.json"
  kill "$scraper"
  wait "$scraper" 2>/dev/null || true
  faas logs "$1" --json --tail 1000000 | wc -l >"$results/log-lines-$1.txt"
  faas rm "$1" >/dev/null
}

for c in 1 10 50; do
  if [ "$c" != 50 ]; then
    sleep 2
    log "throughput: bare runc run back to back, $c worker(s), ${kLoadSeconds} s"
    floor_runc -j "$c" -n "$kLoadMax" -t "$kLoadSeconds" >"$results/floor-runc-j$c.json"
  fi
  for pool in 0 1; do
    ip=$cold_ip
    [ "$pool" = 0 ] || ip=$warm_ip
    sleep 2  # let the previous run's containers finish their cleanup
    log "throughput: faasd --warm $pool, $c client(s), ${kLoadSeconds} s"
    "$bench_bin/loadgen" -a "$ip" -c "$c" -n "$kLoadMax" -t "$kLoadSeconds" \
      >"$results/load-warm$pool-c$c.json"
  done
  if [ "$c" = 10 ]; then
    # The same handler (hello-c) with a fresh container per request, then with reuse.
    hello_c hello-c 1
    hello_c hello-reuse 100
    chatty log-quiet 0
    chatty log-chatty 100
  fi
done
stop_faasd
cp "$work/main/faasd.log" "$results/faasd-main.log"

# ---- deploy of the big image ----------------------------------------------------------
mapfile -t layers < "$images/big-layers.txt"
for i in $(seq "$kDeployRuns"); do
  log "deploy $i/$kDeployRuns: faas new of $(du -h "$images/big.tar" | cut -f1) vs tar -x"
  start_faasd "$work/deploy-$i"
  # shellcheck disable=SC2016  # $1 and $@ are the inner shell's
  "$bench_bin/floor" spawn -n 1 -- sh -c 'faas new big <"$1"' sh "$images/big.tar" \
    >"$results/deploy-faas-$i.json"
  printf '{"vmhwm_kb": %s, "vmrss_kb": %s}\n' "$(vm_kb "$faasd_pid" VmHWM)" \
    "$(vm_kb "$faasd_pid" VmRSS)" >"$results/deploy-mem-$i.json"
  stop_faasd
  cp "$work/deploy-$i/faasd.log" "$results/faasd-deploy-$i.log"
  rm -rf "$work/deploy-$i"
  dest=$work/tarx-$i
  mkdir "$dest"
  # shellcheck disable=SC2016
  "$bench_bin/floor" spawn -n 1 -- sh -c \
    'd=$1; shift; for l in "$@"; do tar -xf "$l" -C "$d" || exit 1; done' sh "$dest" "${layers[@]}" \
    >"$results/deploy-tar-$i.json"
  rm -rf "$dest"
done

# ---- deploy of the big image from a registry ------------------------------------------
# docker-registry on loopback holds the big image (skopeo copy of the archive); each
# run deploys it by reference into a fresh faasd (every layer downloaded), again after
# `faas rm` (every layer from faasd's cache), pushes the version back to new tags, and
# copies the image with skopeo to a directory and from the archive to the registry.
log "registry: the big image into docker-registry on 127.0.0.1:5000"
# serve_registry DIR PORT: docker-registry with its storage in DIR on 127.0.0.1:PORT,
# in the background; waits until it answers.
serve_registry() {
  mkdir -p "$1"
  printf '{"version": 0.1, "log": {"level": "warn"}, "http": {"addr": "127.0.0.1:%s"},
  "storage": {"filesystem": {"rootdirectory": "%s/data"}}}\n' "$2" "$1" >"$1/config.yml"
  docker-registry serve "$1/config.yml" >"$1/registry.log" 2>&1 &
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$2/v2/" && return 0
    sleep 0.1
  done
  echo "docker-registry on port $2 did not start" >&2
  return 1
}
serve_registry "$work/registry" 5000
registry_pid=$!
big_ref=127.0.0.1:5000/bench/big:1
skopeo copy -q --dest-tls-verify=false "docker-archive:$images/big.tar" "docker://$big_ref"
echo '{}' >"$work/no-registry-auth.json"
for i in $(seq "$kDeployRuns"); do
  log "pull $i/$kDeployRuns: faas new --image, again with the layers cached, faas push, skopeo copy"
  start_faasd "$work/pull-$i" --registry-auth "$work/no-registry-auth.json"
  "$bench_bin/floor" spawn -n 1 -- faas new big --image "$big_ref" \
    >"$results/pull-faas-$i.json"
  faas rm big >/dev/null
  "$bench_bin/floor" spawn -n 1 -- faas new big --image "$big_ref" \
    >"$results/pull-cached-$i.json"
  # Pushes go to an empty registry of their own (nothing there to skip or mount): the
  # deployed version (its layer written and uploaded), then under another tag (the
  # layer from faasd's cache, nothing sent), then skopeo's copy of the archive.
  serve_registry "$work/push-registry-$i" 5001
  push_registry_pid=$!
  "$bench_bin/floor" spawn -n 1 -- faas push big "127.0.0.1:5001/bench/pushed:1" \
    >"$results/pull-push-$i.json"
  "$bench_bin/floor" spawn -n 1 -- faas push big "127.0.0.1:5001/bench/pushed:2" \
    >"$results/pull-pushagain-$i.json"
  stop_faasd
  rm -rf "$work/pull-$i"
  "$bench_bin/floor" spawn -n 1 -- skopeo copy -q --dest-tls-verify=false \
    "docker-archive:$images/big.tar" "docker://127.0.0.1:5001/bench/skopeo:1" \
    >"$results/pull-skopeopush-$i.json"
  kill "$push_registry_pid"
  wait "$push_registry_pid" 2>/dev/null || true
  push_registry_pid=""
  rm -rf "$work/push-registry-$i"
  "$bench_bin/floor" spawn -n 1 -- skopeo copy -q --src-tls-verify=false "docker://$big_ref" \
    "dir:$work/skopeo-$i" >"$results/pull-skopeo-$i.json"
  rm -rf "$work/skopeo-$i"
done
kill "$registry_pid"
wait "$registry_pid" 2>/dev/null || true
registry_pid=""

# ---- faasd's memory with many functions ---------------------------------------------------
log "RSS with $kFunctions functions"
start_faasd "$work/many"
sleep 1
rss_start=$(vm_kb "$faasd_pid" VmRSS)
for i in $(seq -f '%03g' 0 $((kFunctions - 1))); do
  faas new "f$i" --warm 0 <"$images/hello.tar" >/dev/null
done
sleep 1
deployed=$(faas list --json | "$py" -c 'import json, sys; print(len(json.load(sys.stdin)))')
printf '{"functions": %s, "vmrss_start_kb": %s, "vmrss_kb": %s, "vmhwm_kb": %s}\n' \
  "$deployed" "$rss_start" "$(vm_kb "$faasd_pid" VmRSS)" "$(vm_kb "$faasd_pid" VmHWM)" \
  >"$results/many.json"
stop_faasd
cp "$work/many/faasd.log" "$results/faasd-many.log"
log "measurements done"
