#!/usr/bin/env bash
# Fails if any C++ source is not formatted as .clang-format says.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files 'src/*.cc' 'src/*.h' 'tests/unit/*.cc' 'tests/unit/*.h' 'sdk/*.cc' 'sdk/*.h')
clang-format --dry-run --Werror "${files[@]}"
echo "clang-format: ${#files[@]} files clean"
