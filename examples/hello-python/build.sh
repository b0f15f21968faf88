#!/bin/sh
# Builds the hello-python image with podman, with the Python SDK (sdk/python) next to the
# handler. With OUT.tar, also writes the image there (podman save) for
# `faas new hello-python < OUT.tar`. IMAGE=name:tag renames it; BASE=image picks the
# Python base (default the Dockerfile's, python:3.11-slim). The base must be on this
# machine: without a registry, sdk/tools/faas-python-base builds it from this machine's
# apt sources.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk="$here/../../sdk"
image=${IMAGE:-localhost/faas-example-hello-python:latest}
out=${1:-}
case $out in "" | /*) ;; *) out="$PWD/$out" ;; esac
base=${BASE:-$(sed -n 's/^ARG BASE=//p' "$here/Dockerfile")}
if ! podman image exists "$base"; then
  echo "Error: the Python base image $base is not on this machine. Build it without a" >&2
  echo "registry (Debian bookworm with python3, from this machine's apt sources):" >&2
  echo "  $(cd "$sdk" && pwd)/tools/faas-python-base${BASE:+ $BASE}" >&2
  echo "or pull it from a registry: podman pull $base" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$here/handler.py" "$sdk/python/faas_handler.py" "$ctx/"
podman build -q --isolation chroot --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null
if [ -n "$out" ]; then
  rm -f "$out"
  podman save -q -o "$out" "$image"
fi
echo "built $image${out:+ -> $out}"
