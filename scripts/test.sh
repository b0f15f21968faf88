#!/usr/bin/env bash
# The test command: install, build (warnings are errors), run the unit tests
# (GoogleTest through ctest), the sanitizer build and fuzzers, the black-box pytest
# tiers in network namespaces, and the vmtest selection in a qemu VM, twice: with
# runc, then with crun (which needs the guest's cgroup v2; this host's are hybrid).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-format.sh
scripts/build.sh
echo "== unit tests (ctest)"
ctest --test-dir build --output-on-failure -j2
echo "== sanitizers: unit tests under ASan + UBSan, then libFuzzer"
scripts/sanitize.sh
echo "== black-box tests (pytest, sandbox: namespaces on this host)"
/usr/bin/python3 -m pytest "$@"
echo "== vmtest: the vmtest selection again, in a real VM booted with qemu"
/usr/bin/python3 -m pytest -m vmtest --vm=qemu
echo "== vmtest with crun: the same selection, every faasd with --runtime crun"
/usr/bin/python3 -m pytest -m vmtest --vm=qemu --runtime crun
