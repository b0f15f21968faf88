#!/usr/bin/env bash
# The demo: install, build, start faasd in a network namespace of its own, deploy
# the hello function from a podman-built image, call it, list it, stop faasd.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp /tmp/faasd-setup.XXXXXX.log)
echo "Installing packages and building (log: $log)"
{ scripts/install-deps.sh && scripts/build.sh; } >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
demo=$(mktemp -d /tmp/faasd-demo.XXXXXX)
scripts/build-hello-image.sh "$demo/hello.tar"
echo "Built the hello image: $(du -h "$demo/hello.tar" | cut -f1)"

# Everything below runs in a new network namespace: its 10.0.0.x addresses and
# traffic never reach the host's network.
exec unshare --net --mount --propagation private bash -euo pipefail -c '
  demo=$1
  ip link set lo up
  export PATH="$PWD/build/src:$PATH" FAAS_SOCKET="$demo/run/faasd.sock"
  faasd --state-dir "$demo/state" --run-dir "$demo/run" --log-level warn &
  faasd_pid=$!
  trap "kill -TERM $faasd_pid 2>/dev/null; wait $faasd_pid; rm -rf $demo" EXIT
  for _ in $(seq 100); do faas list >/dev/null 2>&1 && break; sleep 0.1; done
  set -x
  faas new hello < "$demo/hello.tar"
  curl -sS "http://$(faas ip hello)/"
  faas list
  set +x
  echo "Five more calls, each answered by a fresh container from the warm pool:"
  for _ in 1 2 3 4 5; do
    sleep 0.2
    curl -sS -o /dev/null -w "  %{http_code} in %{time_total} s\n" "http://$(faas ip hello)/"
  done
  faas describe hello | sed -n "/\"runtime\"/,/}/p"
' demo "$demo"
