#!/usr/bin/env bash
# Builds the example hello handler into a FROM-scratch image with podman and
# writes `podman save` output (a docker-archive) to the path given ($1).
set -euo pipefail
out=${1:?usage: build-hello-image.sh OUT.tar [oci-archive|docker-archive]}
format=${2:-docker-archive}
src="$(cd "$(dirname "$0")/.." && pwd)/tests/handlers/hello"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$src/Dockerfile" "$ctx/"
gcc -static -O2 -I "$src/../common" -o "$ctx/hello" "$src/hello.c"
podman build -q --isolation chroot -t localhost/faas-hello:latest "$ctx" >/dev/null
rm -f "$out"
podman save -q --format "$format" -o "$out" localhost/faas-hello:latest
