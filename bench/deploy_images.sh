#!/usr/bin/env bash
# The images of the deploy measurements, as podman save writes them (docker-archive),
# into OUT; run.sh calls it, and it runs alone too (as root), to try measure.sh's
# deploy part without the rest of the benchmark:
#
#   bench/deploy_images.sh OUT
#
#   big.tar, big-v2.tar        about 50 MB in two layers of random files, the hello
#                              handler in the first; v2 has the same first layer and
#                              one small file changed in the second
#   big/, big-layers.txt       big.tar unpacked and the paths of its layer tars, in order
#   debian.tar, debian-v2.tar  Debian bookworm (minbase, python3-minimal; thousands of
#                              files) made by mmdebstrap, with the hello handler on top;
#                              v2 has the same base layer and the handler built otherwise
#
# The Debian base is made as sdk/tools/faas-python-base makes the test suite's Python
# base: this machine's apt sources (or MIRROR, a URL or an apt sources file), no
# manuals, translations or docs, no /dev. It is downloaded again on every run: nothing
# is cached, and every podman image made here is removed on exit.
set -euo pipefail
out=${1:?usage: deploy_images.sh OUT}
repo=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

work=$(mktemp -d /var/tmp/faasd-bench-images.XXXXXX)
podman_tags=()
cleanup() {
  [ ${#podman_tags[@]} -eq 0 ] || podman rmi -f "${podman_tags[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The handler every image runs: tests/handlers/hello, static, as the hello image has it.
# hello_handler OUT [GCC_OPTION...]
hello_handler() {
  local to=$1
  shift
  gcc -static -O2 "$@" -I "$repo/tests/handlers/common" -o "$to" \
    "$repo/tests/handlers/hello/hello.c"
}

# build TAG CONTEXT [BUILD_ARG...]: podman build, the tag removed again on exit.
build() {
  local tag=$1 ctx=$2
  shift 2
  podman_tags+=("$tag")
  podman build -q --isolation chroot "$@" -t "$tag" "$ctx" >/dev/null
}

save() { podman save -q --format docker-archive -o "$2" "$1"; }

# A version of a function is its base and one layer on top, the handler's CMD with it.
top_dockerfile() {
  # shellcheck disable=SC2016  # $BASE is the Dockerfile's
  printf 'ARG BASE\nFROM $BASE\nCOPY %s\nCMD ["/handler"]\n' "$1" >"$2/Dockerfile"
}

# same_base V1 V2: fails unless the archives' layers are the same but for the last; the
# redeploy figures mean nothing otherwise.
same_base() {
  "$py" - "$1" "$2" <<'EOF'
import json, sys, tarfile
def layers(path):
    with tarfile.open(path) as t:
        return json.load(t.extractfile("manifest.json"))[0]["Layers"]
one, two = (layers(p) for p in sys.argv[1:3])
if len(one) != len(two) or one[:-1] != two[:-1] or one[-1] == two[-1]:
    sys.exit(f"{sys.argv[2]} is not {sys.argv[1]} with another top layer: {one} vs {two}")
EOF
}

# ---- big ------------------------------------------------------------------------------------
# About 50 MB in two layers of random (incompressible) files; the first layer also holds
# the hello handler, so the image is a working function.
log "images: big and big-v2 (two layers of random files)"
ctx=$work/big
mkdir -p "$ctx/base/data1" "$ctx/top/data2"
hello_handler "$ctx/base/handler"
for layer in 1 2; do
  dir=$ctx/base/data1
  [ "$layer" = 1 ] || dir=$ctx/top/data2
  for i in $(seq -w 1 25); do
    head -c 1048576 /dev/urandom >"$dir/file-$i"
  done
done
printf 'FROM scratch\nCOPY base/ /\n' >"$ctx/Dockerfile"
build localhost/faasd-bench-big-base:latest "$ctx"
top_dockerfile 'top/ /' "$ctx"
echo 1 >"$ctx/top/data2/version"
build localhost/faasd-bench-big:latest "$ctx" --build-arg BASE=localhost/faasd-bench-big-base:latest
save localhost/faasd-bench-big:latest "$out/big.tar"
echo 2 >"$ctx/top/data2/version"
build localhost/faasd-bench-big:v2 "$ctx" --build-arg BASE=localhost/faasd-bench-big-base:latest
save localhost/faasd-bench-big:v2 "$out/big-v2.tar"
same_base "$out/big.tar" "$out/big-v2.tar"
rm -rf "$ctx"
# The same layers as plain tar files, in order, for the tar -x of the layers alone.
rm -rf "$out/big"
mkdir "$out/big"
tar -xf "$out/big.tar" -C "$out/big"
"$py" -c '
import json, sys
with open(sys.argv[1] + "/manifest.json") as f:
    print("\n".join(sys.argv[1] + "/" + layer for layer in json.load(f)[0]["Layers"]))
' "$out/big" >"$out/big-layers.txt"

# ---- debian ---------------------------------------------------------------------------------
# Thousands of small files, as the base of a function in Python has.
# mmdebstrap pastes each sources file it is given into the new system's apt sources.
sources() {
  if [ -n "${MIRROR:-}" ]; then
    echo "$MIRROR"
    return
  fi
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ] && grep -q '^[[:space:]]*[^#[:space:]]' "$f"; then echo "$f"; fi
  done
}
log "images: debian and debian-v2 (mmdebstrap bookworm minbase with python3-minimal)"
root=$work/debian-root
mapfile -t apt_sources < <(sources)
mmdebstrap --quiet --format=directory --variant=minbase --include=python3-minimal \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$root" "${apt_sources[@]}"
# Without /dev, as faas-python-base's --skip=output/dev leaves it: the runtime makes it.
podman_tags+=(localhost/faasd-bench-debian-base:latest)
tar --numeric-owner --exclude=./dev -C "$root" -c . |
  podman import -q - localhost/faasd-bench-debian-base:latest >/dev/null
rm -rf "$root"
ctx=$work/debian
mkdir -p "$ctx"
top_dockerfile 'handler /handler' "$ctx"
hello_handler "$ctx/handler"
build localhost/faasd-bench-debian:latest "$ctx" \
  --build-arg BASE=localhost/faasd-bench-debian-base:latest
save localhost/faasd-bench-debian:latest "$out/debian.tar"
# -Os instead of -O2: the same handler, another binary.
hello_handler "$ctx/handler" -Os
build localhost/faasd-bench-debian:v2 "$ctx" \
  --build-arg BASE=localhost/faasd-bench-debian-base:latest
save localhost/faasd-bench-debian:v2 "$out/debian-v2.tar"
same_base "$out/debian.tar" "$out/debian-v2.tar"
rm -rf "$ctx"
log "images: $(cd "$out" && du -h big.tar big-v2.tar debian.tar debian-v2.tar | tr '\t\n' ' ')"
