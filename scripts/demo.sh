#!/usr/bin/env bash
# The demo: install, build, start faasd in a network namespace of its own, deploy
# the hello function from a podman-built image, call it, list it, deploy it again with
# a warm pool and call that, stop faasd.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
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
  call() { curl -sS -o /dev/null -w "  %{http_code} in %{time_total} s\n" "http://$(faas ip "$1")/"; }
  echo "Three more calls, each starting a fresh container for itself (the default):"
  for _ in 1 2 3; do call hello; done
  echo "faasd logs one line per request (and what the handler prints) per function:"
  set -x
  faas logs hello --tail 3
  set +x
  echo "With --warm 1, faasd keeps one container started ahead, its handler waiting:"
  echo "a call is handed to it at once, and the next one is started behind it."
  set -x
  faas new hello-warm --warm 1 < "$demo/hello.tar"
  set +x
  warm() { [[ $(faas describe hello-warm) == *"\"pool_ready\": 1"* ]]; }
  echo "Five calls, each answered by a fresh container from the warm pool:"
  for _ in 1 2 3 4 5; do
    for _ in $(seq 100); do warm && break; sleep 0.1; done
    call hello-warm
  done
  faas describe hello-warm | sed -n "/\"runtime\"/,/}/p"
' demo "$demo"
