#!/usr/bin/env bash
# Builds the Debian package of faasd: a Release build for /usr in build-pkg/ (apart from
# the development build in build/), then cpack -G DEB. Prints the package's path.
#   scripts/package.sh              writes build-pkg/faasd_<version>_<arch>.deb
#   apt install ./build-pkg/faasd_*.deb && systemctl enable --now faasd
# Needs what scripts/install-deps.sh installs (dpkg-dev for the Depends of the libraries).
# BUILD_DIR replaces build-pkg/. The build's output goes to stderr, the path to stdout.
# Warnings are not errors here: -O3 makes GCC guess at more of them than the -O2 of
# scripts/build.sh, whose build keeps -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build-pkg}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DFAAS_WERROR=OFF -DBUILD_TESTING=OFF >&2
ninja -C "$dir" >&2
(cd "$dir" && cpack -G DEB) >&2
version=$(sed -n 's/^project(faasd VERSION \([^ ]*\) .*/\1/p' CMakeLists.txt)
deb="$PWD/$dir/faasd_${version}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { echo "Error: cpack did not write $deb" >&2 && exit 1; }
echo "$deb"
