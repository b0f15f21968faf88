#!/bin/sh
# Builds the wordfreq image with podman: compiles wordfreq.c and the C SDK statically on this
# machine (the image is FROM scratch), then `podman build`. With OUT.tar, also writes the
# image there (podman save) for `faas new wordfreq < OUT.tar`. IMAGE=name:tag renames it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk="$here/../../sdk"
image=${IMAGE:-localhost/faas-example-wordfreq:latest}
out=${1:-}
case $out in "" | /*) ;; *) out="$PWD/$out" ;; esac
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
gcc -static -s -O2 -Wall -Wextra -Werror -I "$sdk/c" -o "$ctx/wordfreq" "$here/wordfreq.c" "$sdk/c/faas.c"
cp "$here/Dockerfile" "$ctx/"
podman build -q --isolation chroot -t "$image" "$ctx" >/dev/null
if [ -n "$out" ]; then
  rm -f "$out"
  podman save -q -o "$out" "$image"
fi
echo "built $image${out:+ -> $out}"
