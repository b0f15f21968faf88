#!/usr/bin/env bash
# The benchmark: floors (process spawn, namespaces, bare runc), faasd's cold and
# warm request paths, throughput, deploy time and memory, all in one run. Writes
# docs/PERFORMANCE.md and docs/img/*.png; the raw results go to bench/results/.
#
#   sudo bench/run.sh [--vm]
#
# --vm also boots the vmtest guest (qemu, cgroup v2) and measures runc and crun
# side by side there (bench/vm_runtimes.py, a few minutes more): crun refuses this
# host's hybrid cgroups, so the comparison cannot run on the host itself.
#
# Last, bench/cluster.py runs three faasd nodes behind a bird2 ECMP router (the test
# suite's cluster, tests/lib/cluster.py) and measures deploy-to-ready and requests/s
# with 1, 2 and 3 nodes serving (a few minutes). Should that part fail, the page is
# still written, saying so, and run.sh exits with its status.
#
# Everything that starts faasd or sends a request runs in a network namespace
# of its own (see measure.sh; the cluster's machines are namespaces inside another).
# FAASD_BIN_DIR=DIR measures the faasd and faas in DIR instead of building them with
# scripts/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
[ "$(id -u)" = 0 ] || { echo "run as root (faasd adds addresses and starts containers)" >&2; exit 1; }
py=/usr/bin/python3
vm=0
case "${1:-}" in
  "") ;;
  --vm) vm=1 ;;
  *) echo "usage: bench/run.sh [--vm]" >&2; exit 2 ;;
esac

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- packages ---------------------------------------------------------------------------
log "installing faasd's dependencies (scripts/install-deps.sh)"
scripts/install-deps.sh >/dev/null
matplotlib=$(dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null || true)
if [ "$matplotlib" != "install ok installed" ]; then
  log "installing python3-matplotlib"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
  apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends python3-matplotlib \
    >/dev/null
fi

# ---- build -------------------------------------------------------------------------------
if [ -n "${FAASD_BIN_DIR:-}" ]; then
  bin=$(cd "$FAASD_BIN_DIR" && pwd)
else
  log "building faasd (scripts/build.sh)"
  scripts/build.sh >/dev/null
  bin=$repo/build/src
fi
for b in faasd faas; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b" >&2; exit 1; }
done
bench_bin=$repo/bench/build
mkdir -p "$bench_bin"
for t in floor loadgen; do
  gcc -O2 -Wall -Wextra -Werror -pthread -o "$bench_bin/$t" "bench/$t.c"
done

work=$(mktemp -d /var/tmp/faasd-bench.XXXXXX)
podman_tags=()
cleanup() {
  [ ${#podman_tags[@]} -eq 0 ] || podman rmi -f "${podman_tags[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---- images ------------------------------------------------------------------------------
images=$work/images
mkdir -p "$images"
log "building the images"
scripts/build-hello-image.sh "$images/hello.tar"

# The C SDK's example (examples/hello-c): its faas_serve() loop serves up to FAAS_REUSE
# clients in turn, so it is measured with and without --reuse.
hello_c_tag=localhost/faasd-bench-hello-c:latest
podman_tags+=("$hello_c_tag")
IMAGE=$hello_c_tag examples/hello-c/build.sh "$images/hello-c.tar" >/dev/null
podman rmi -f "$hello_c_tag" >/dev/null

# The images of the deploy runs: big (random data) and Debian (many files), each with a
# v2 that differs in its top layer only.
bench/deploy_images.sh "$images"

# ---- the facts of this machine -------------------------------------------------------------
mkdir -p "$work/results"
"$py" bench/facts.py "$work/results/facts.json" "$images/big.tar" "$images/big-layers.txt" \
  "${FAASD_BIN_DIR:+$bin}"

# ---- measure, in a network namespace of our own ------------------------------------------
log "measuring (in a new network and mount namespace)"
status=0
unshare --net --mount --propagation private \
  bench/measure.sh "$work" "$bin" "$bench_bin" || status=$?

if [ "$status" = 0 ] && [ "$vm" = 1 ]; then
  log "runc and crun side by side, in the vmtest guest (qemu)"
  "$py" bench/vm_runtimes.py "$images" "$bin" "$bench_bin" "$work/results" || status=$?
fi

# The cluster: its machines (namespaces made by tests/lib/vm.py) inside a network and
# mount namespace of their own; cluster.py bounds itself, timeout bounds it again.
cluster_status=0
if [ "$status" = 0 ]; then
  log "the cluster: three nodes behind a bird2 ECMP router (bench/cluster.py)"
  unshare --net --mount --propagation private \
    timeout -k 120 1200 "$py" bench/cluster.py "$bin" "$bench_bin" \
      "$work/results/cluster.json" --image "$images/hello.tar" --work "$work" \
    || cluster_status=$?
fi

rm -rf bench/results
cp -r "$work/results" bench/results
if [ "$status" != 0 ]; then
  echo "measuring failed (exit $status); what it measured and faasd's log are in bench/results/" >&2
  exit "$status"
fi
"$py" bench/report.py bench/results docs
log "wrote docs/PERFORMANCE.md and docs/img/*.png (raw results in bench/results/)"
if [ "$cluster_status" != 0 ]; then
  echo "the cluster part failed (exit $cluster_status); see bench/results/cluster.json" \
    "and cluster-failed.log" >&2
  exit "$cluster_status"
fi
