# shellcheck shell=bash
# Starting and stopping one faasd, for measure.sh and runtimes.sh (sourced).
#   start_faasd DIR [ARG...]   a faasd with state and run dirs under DIR and ARGs,
#                              logging to DIR/faasd.log; FAAS_SOCKET points at it
#   stop_faasd                 SIGTERM, up to 20 s to drain, then SIGKILL, and the
#                              containers a kill left
# FAASD_START_TENTHS: how long faasd may take to answer (tenths of a second, 100).
# FAASD_RUNTIME: the OCI runtime of the containers left behind (runc).

faasd_pid=""
faasd_dir=""

start_faasd() {
  faasd_dir=$1
  shift
  mkdir -p "$faasd_dir/state" "$faasd_dir/run"
  export FAAS_SOCKET=$faasd_dir/run/faasd.sock
  faasd --state-dir "$faasd_dir/state" --run-dir "$faasd_dir/run" "$@" \
    >>"$faasd_dir/faasd.log" 2>&1 &
  faasd_pid=$!
  for _ in $(seq "${FAASD_START_TENTHS:-100}"); do
    faas list >/dev/null 2>&1 && return 0
    kill -0 "$faasd_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "faasd $* did not start; its log:" >&2
  tail -20 "$faasd_dir/faasd.log" >&2
  return 1
}

stop_faasd() {
  [ -n "$faasd_pid" ] || return 0
  kill -TERM "$faasd_pid" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$faasd_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$faasd_pid" 2>/dev/null; then
    echo "faasd did not stop on SIGTERM within 20 s: killing it" >&2
    kill -KILL "$faasd_pid" 2>/dev/null || true
  fi
  wait "$faasd_pid" 2>/dev/null || true
  delete_containers "$faasd_dir/run/runc"
  faasd_pid=""
}

# delete_containers ROOT: every container of FAASD_RUNTIME under ROOT, force-deleted.
delete_containers() {
  local root=$1 runtime=${FAASD_RUNTIME:-runc} id
  [ -d "$root" ] || return 0
  for id in $("$runtime" --root "$root" list -q 2>/dev/null); do
    "$runtime" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
  done
}
