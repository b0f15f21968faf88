#!/usr/bin/env bash
# The test command: install, build (warnings are errors), run the unit tests
# (GoogleTest through ctest) and the black-box pytest tiers except vmtest-only ones.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/check-format.sh
scripts/build.sh
echo "== unit tests (ctest)"
ctest --test-dir build --output-on-failure -j2
echo "== sanitizers: unit tests under ASan + UBSan, then libFuzzer"
scripts/sanitize.sh
echo "== black-box tests (pytest)"
/usr/bin/python3 -m pytest -m "not vmtest" "$@"
