#!/bin/sh
# Builds the hello-python image with podman, with the Python SDK (sdk/python) next to the
# handler. With OUT.tar, also writes the image there (podman save) for
# `faas new hello-python < OUT.tar`. IMAGE=name:tag renames it; BASE=image picks the
# Python base (default python:3.11-slim, from a registry).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk="$here/../../sdk"
image=${IMAGE:-localhost/faas-example-hello-python:latest}
out=${1:-}
case $out in "" | /*) ;; *) out="$PWD/$out" ;; esac
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$here/handler.py" "$sdk/python/faas_handler.py" "$ctx/"
podman build -q --isolation chroot ${BASE:+--build-arg "BASE=$BASE"} -t "$image" "$ctx" >/dev/null
if [ -n "$out" ]; then
  rm -f "$out"
  podman save -q -o "$out" "$image"
fi
echo "built $image${out:+ -> $out}"
