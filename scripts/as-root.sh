# shellcheck shell=bash
# Sourced first by the set-up scripts: one not started as root re-runs itself through
# sudo; as root (a fresh Debian machine's root may have no sudo at all) it just goes on.
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "Error: run $0 as root (sudo is not installed)" >&2; exit 1; }
  exec sudo -- "$0" "$@"
fi
