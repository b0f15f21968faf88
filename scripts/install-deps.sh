#!/usr/bin/env bash
# Installs what faasd needs to build, run and test, from Debian 12's packages.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o DPkg::Lock::Timeout=600
apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends \
  build-essential cmake ninja-build pkg-config ca-certificates \
  libarchive-dev zlib1g-dev libssl-dev nlohmann-json3-dev libboost-dev libmnl-dev \
  libcli11-dev libspdlog-dev libfmt-dev libcurl4-openssl-dev libgtest-dev libgmock-dev \
  libsystemd-dev systemd prometheus-cpp-dev prometheus \
  runc crun podman uidmap iproute2 curl zstd util-linux \
  python3 python3-pytest clang-format clang libclang-rt-14-dev \
  busybox-static mmdebstrap qemu-system-x86 linux-image-amd64 strace \
  docker-registry skopeo apache2-utils openssl etcd-server etcd-client bird2
