#!/bin/sh
# Builds the shell-wc image with podman: compiles faas-stdio (sdk/stdio) statically on this
# machine and copies Debian's static busybox (package busybox-static; BUSYBOX=path picks
# another). With OUT.tar, also writes the image there (podman save) for
# `faas new shell-wc < OUT.tar`. IMAGE=name:tag renames it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk="$here/../../sdk"
image=${IMAGE:-localhost/faas-example-shell-wc:latest}
busybox=${BUSYBOX:-/bin/busybox}
out=${1:-}
case $out in "" | /*) ;; *) out="$PWD/$out" ;; esac
if [ ! -x "$busybox" ] || readelf -l "$busybox" | grep -q INTERP; then
  echo "build.sh: need a static busybox at $busybox (Debian: apt-get install busybox-static)" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
gcc -static -s -O2 -Wall -Wextra -Werror -I "$sdk/c" -o "$ctx/faas-stdio" \
  "$sdk/stdio/faas-stdio.c" "$sdk/c/faas.c"
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$ctx/"
podman build -q --isolation chroot -t "$image" "$ctx" >/dev/null
if [ -n "$out" ]; then
  rm -f "$out"
  podman save -q -o "$out" "$image"
fi
echo "built $image${out:+ -> $out}"
