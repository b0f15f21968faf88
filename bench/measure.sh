#!/usr/bin/env bash
# The measuring half of bench/run.sh; it runs inside the network namespace that
# run.sh creates and refuses to run in the host's. Usage:
#   measure.sh WORK BIN_DIR BENCH_BIN
# WORK holds images/ (hello, hello-c, and what bench/deploy_images.sh writes) and
# receives results/*.json; BIN_DIR has faasd and faas; BENCH_BIN has floor and loadgen.
# BENCH_ONLY=deploy measures the deploys alone; images/ then needs only
# deploy_images.sh's images:
#   bench/deploy_images.sh WORK/images
#   BENCH_ONLY=deploy unshare --net --mount --propagation private \
#     bench/measure.sh WORK BIN_DIR BENCH_BIN
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
readonly kDiskFunctions=10    # functions from one image whose disk use is measured
readonly kDeployTimeout=300   # s, for each deploy, tar -x and du of the deploy runs

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

# ---- deploys: the big image and the Debian one ---------------------------------------------
# Each run, for each image, has a faasd of its own: the first deploy of the image (timed,
# then faasd's VmHWM), its redeploy with IMAGE-v2 (the same lower layers, another top
# layer), that again (nothing new to import), then kDiskFunctions functions from the image
# and the disk the state dir takes. Then, on the same disk, tar -x of the archive and of
# its layers, the work of a deploy done by hand. The big image's first deploy, memory and
# tar -x of its layers alone keep the names report.py has always read (deploy-faas-N,
# deploy-mem-N, deploy-tar-N), so that the results of earlier runs still make a page.

# timed OUT PROGRAM [ARG...]: one run of PROGRAM, timed by floor and bounded by timeout.
# Neither faasd nor tar waits for its files to reach the disk; the sync first keeps the
# writeback of the steps before (hundreds of MB) from slowing this one by chance.
timed() {
  local out=$1
  shift
  timeout "$kDeployTimeout" sync
  "$bench_bin/floor" spawn -n 1 -- timeout "$kDeployTimeout" "$@" >"$out"
}

# deploy_timed OUT NAME ARCHIVE: `faas new NAME <ARCHIVE`, timed.
deploy_timed() {
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's
  timed "$1" sh -c 'faas new "$1" <"$2"' sh "$2" "$3"
}

# image_facts ARCHIVE: its size, and each layer's path in it (manifest order), bytes and
# entries, as JSON.
image_facts() {
  "$py" - "$1" <<'PY'
import json, os, sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    paths = json.load(archive.extractfile("manifest.json"))[0]["Layers"]
    layers = []
    for path in paths:
        member = archive.getmember(path)
        while member.issym() or member.islnk():  # podman's DIGEST/layer.tar -> ../DIGEST.tar
            member = archive.getmember(os.path.normpath(
                os.path.join(os.path.dirname(member.name), member.linkname)))
        with tarfile.open(fileobj=archive.extractfile(member)) as layer:
            entries = sum(1 for _ in layer)
        layers.append({"path": path, "bytes": member.size, "entries": entries})
print(json.dumps({"archive_bytes": os.path.getsize(sys.argv[1]), "layers": layers}, indent=1))
PY
}

# function_dir STATE NAME: the directory that holds NAME's versions (images/NAME; should
# faasd call it functions/NAME, that).
function_dir() {
  local d
  for d in "$1/functions/$2" "$1/images/$2"; do
    if [ -d "$d" ]; then
      echo "$d"
      return 0
    fi
  done
  echo "no directory of function $2 under $1/functions or $1/images" >&2
  return 1
}

du_kb() { timeout "$kDeployTimeout" du -sk "$1" | cut -f1; }

# deploy_run IMAGE RUN: one run of the deploy measurements of IMAGE (big or debian).
deploy_run() {
  local image=$1 i=$2 dir=$work/deploy-$1-$2 dest=$work/tarx-$1-$2 k dirs=() sizes=() inner
  local archive=$images/$1.tar v2=$images/$1-v2.tar first=deploy-$1-faas-$2 mem=deploy-$1-mem-$2
  if [ "$image" = big ]; then
    first=deploy-faas-$i
    mem=deploy-mem-$i
  fi
  log "deploy $i/$kDeployRuns, $image: faas new of $(du -h "$archive" | cut -f1), redeploys," \
    "$kDiskFunctions functions, tar -x"
  start_faasd "$dir"
  deploy_timed "$results/$first.json" "$image" "$archive"
  printf '{"vmhwm_kb": %s, "vmrss_kb": %s}\n' "$(vm_kb "$faasd_pid" VmHWM)" \
    "$(vm_kb "$faasd_pid" VmRSS)" >"$results/$mem.json"
  deploy_timed "$results/deploy-$image-redeploy-$i.json" "$image" "$v2"
  deploy_timed "$results/deploy-$image-same-$i.json" "$image" "$v2"
  # The state dir is then the functions below and what they share; a failed deploy above
  # may have left no function to remove.
  timeout "$kDeployTimeout" faas rm "$image" >/dev/null 2>&1 || true
  for k in $(seq "$kDiskFunctions"); do
    timeout "$kDeployTimeout" faas new "f$k" <"$archive" >/dev/null
    dirs+=("$(function_dir "$dir/state" "f$k")")
  done
  # du counts an inode linked from several places once per run of du: the state dir as a
  # whole, then each function as if it were alone.
  for k in "${dirs[@]}"; do
    sizes+=("$(du_kb "$k")")
  done
  local layers_kb=null
  [ ! -d "$dir/state/layers" ] || layers_kb=$(du_kb "$dir/state/layers")
  printf '{"functions": %s, "state_kb": %s, "function_kb": [%s], "layers_kb": %s, %s}\n' \
    "$kDiskFunctions" "$(du_kb "$dir/state")" "$(IFS=,; echo "${sizes[*]}")" "$layers_kb" \
    "\"vmhwm_kb\": $(vm_kb "$faasd_pid" VmHWM)" >"$results/deploy-$image-disk-$i.json"
  stop_faasd
  cp "$dir/faasd.log" "$results/faasd-deploy-$image-$i.log"
  rm -rf "$dir"

  mapfile -t inner < <("$py" -c '
import json, sys
print("\n".join(layer["path"] for layer in json.load(sys.stdin)["layers"]))' \
    <"$results/deploy-$image-image.json")
  mkdir -p "$dest/archive" "$dest/layers"
  # shellcheck disable=SC2016  # the positional parameters are the inner shell's
  timed "$results/deploy-$image-tarall-$i.json" sh -c '
    a=$1 b=$2 archive=$3
    shift 3
    tar -xf "$archive" -C "$a" || exit 1
    for l in "$@"; do tar -xf "$a/$l" -C "$b" || exit 1; done' sh \
    "$dest/archive" "$dest/layers" "$archive" "${inner[@]}"
  rm -rf "$dest"
  if [ "$image" = big ]; then
    mkdir "$dest"
    # shellcheck disable=SC2016
    timed "$results/deploy-tar-$i.json" sh -c \
      'd=$1; shift; for l in "$@"; do tar -xf "$l" -C "$d" || exit 1; done' sh "$dest" \
      "${big_layers[@]}"
    rm -rf "$dest"
  fi
}

# deploy_syscalls IMAGE: where a deploy's time goes, by system call: `strace -c -f` on
# faasd (untimed: strace slows every call) during a first deploy of IMAGE and then a
# redeploy of its v2, on a fresh faasd.
deploy_syscalls() {
  local image=$1 kind archive tracer
  start_faasd "$work/syscalls-$image"
  for kind in first redeploy; do
    archive=$images/$image.tar
    [ "$kind" = first ] || archive=$images/$image-v2.tar
    sync
    strace -c -f -o "$results/deploy-$image-syscalls-$kind.txt" -p "$faasd_pid" &
    tracer=$!
    # strace attaches to every thread of faasd at once; the deploy waits for it.
    for _ in $(seq 50); do
      grep -q '^TracerPid:[[:space:]]*[1-9]' "/proc/$faasd_pid/status" && break
      sleep 0.1
    done
    timeout 300 faas new "$image" <"$archive" >/dev/null
    kill -INT "$tracer"
    wait "$tracer" || true
  done
  stop_faasd
  rm -rf "$work/syscalls-$image"
}

deploy_part() {
  local image i
  mapfile -t big_layers <"$images/big-layers.txt"
  for image in big debian; do
    image_facts "$images/$image.tar" >"$results/deploy-$image-image.json"
  done
  for i in $(seq "$kDeployRuns"); do
    for image in big debian; do
      deploy_run "$image" "$i"
    done
  done
  deploy_syscalls debian
}

case ${BENCH_ONLY:-} in
  "") ;;
  deploy)
    deploy_part
    log "measurements done (the deploy part only)"
    exit 0
    ;;
  *)
    echo "measure.sh: BENCH_ONLY is deploy or unset, not $BENCH_ONLY" >&2
    exit 2
    ;;
esac

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

# ---- deploys: the big image and the Debian one (above) --------------------------------
deploy_part

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
