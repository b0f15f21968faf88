#!/usr/bin/env bash
# runc and crun side by side, inside the vmtest guest (cgroup v2: crun refuses this
# host's hybrid cgroups). bench/vm_runtimes.py boots the guest and runs this there;
# it refuses to run anywhere else. Usage:
#   runtimes.sh IMAGES BIN_DIR BENCH_BIN RESULTS
# IMAGES has hello.tar; BIN_DIR has faasd and faas; BENCH_BIN has floor and loadgen;
# RESULTS receives vm-*.json. Per runtime, in blocks that take turns: bare `RUNTIME run`
# of the same bundle (bench/floor's request cycle with faasd's config.json), then
# faasd's cold path with `--runtime RUNTIME` (the same handler, the same count).
set -euo pipefail
images=${1:?usage: runtimes.sh IMAGES BIN_DIR BENCH_BIN RESULTS}
bin=${2:?}
bench_bin=${3:?}
results=${4:?}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3

if ! grep -q 'vmt\.agent' /proc/cmdline; then
  echo "runtimes.sh: refusing to run outside the vmtest guest (use bench/vm_runtimes.py)" >&2
  exit 1
fi
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || {
  echo "runtimes.sh: crun needs cgroup v2 only" >&2
  exit 1
}

# Requests per block and blocks, each bounded in time too (a container start takes
# 0.5-1.5 s under TCG).
readonly kPerBlock=${BENCH_VM_PER_BLOCK:-10} kBlocks=${BENCH_VM_BLOCKS:-3} kBlockSeconds=120
readonly runtimes=(runc crun)
work=/run/faasd-bench
mkdir -p "$work" "$results"
export PATH="$bin:$PATH"

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# start_faasd, stop_faasd; a faasd starts in 1.5 s or more under TCG.
# shellcheck source=bench/faasd.sh
. "$here/faasd.sh"
export FAASD_START_TENTHS=300

# start_runtime RUNTIME: the faasd of RUNTIME (its own state and run dirs), --warm 0.
start_runtime() {
  export FAASD_RUNTIME=$1
  start_faasd "$work/faasd-$1" --runtime "$1" --warm 0
}

cleanup() {
  stop_faasd
  local rt
  for rt in "${runtimes[@]}"; do
    cp "$work/faasd-$rt/faasd.log" "$results/vm-faasd-$rt.log" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---- the functions, and faasd's config.json for the bare runs --------------------------------
for rt in "${runtimes[@]}"; do
  start_runtime "$rt"
  faas new hello --warm 0 <"$images/hello.tar" >/dev/null
  if [ "$rt" = runc ]; then
    # A pooled container's bundle gives faasd's config.json; its rootfs is copied, as
    # the function that owns it is removed again.
    faas new template --warm 1 <"$images/hello.tar" >/dev/null
    configs=()
    for _ in $(seq 300); do
      configs=("$work"/faasd-runc/state/bundles/*/config.json)
      [ -e "${configs[0]}" ] && break
      sleep 0.1
    done
    mkdir -p "$work/floor"
    cp "${configs[0]}" "$work/floor/faasd-config.json"
    "$py" "$here/oci_template.py" "$work/floor/faasd-config.json" "$work/floor/template.json"
    rootfs=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["root"]["path"])' \
      "$work/floor/template.json")
    cp -a "$rootfs" "$work/floor/rootfs"
    "$py" -c '
import json, sys
path, rootfs = sys.argv[1:]
config = json.load(open(path))
config["root"]["path"] = rootfs
json.dump(config, open(path, "w"), separators=(",", ":"))' "$work/floor/template.json" "$work/floor/rootfs"
    faas rm template >/dev/null
  fi
  stop_faasd
done

# ---- blocks: bare run, then faasd's cold path, for each runtime in turn ----------------------
for b in $(seq "$kBlocks"); do
  for rt in "${runtimes[@]}"; do
    log "block $b/$kBlocks, $rt: $kPerBlock bare runs, then $kPerBlock requests to faasd"
    mkdir -p "$work/floor-$rt"
    "$bench_bin/floor" runc -r "$(command -v "$rt")" -T "$work/floor/template.json" \
      -w "$work/floor-$rt" -n "$kPerBlock" -t "$kBlockSeconds" >"$results/vm-floor-$rt-$b.json"
    start_runtime "$rt"
    "$bench_bin/loadgen" -a "$(faas ip hello)" -c 1 -n "$kPerBlock" -t "$kBlockSeconds" \
      >"$results/vm-cold-$rt-$b.json"
    stop_faasd
  done
done

{
  printf '{"kernel": "%s", "nproc": %s, ' "$(uname -r)" "$(nproc)"
  printf '"runc": "%s", ' "$(runc --version | head -1)"
  printf '"crun": "%s", ' "$(crun --version | head -1)"
  printf '"cgroup": "%s"}\n' "$(stat -f -c %T /sys/fs/cgroup)"
} >"$results/vm-facts.json"
log "runtimes measured"
