#!/usr/bin/env bash
# Builds everything with clang, ASan and UBSan into build-fuzz/, runs the unit
# tests there, then runs each libFuzzer target for FUZZ_SECONDS (default 30) from
# the seed corpus in fuzz/seeds plus generated tar seeds. A sanitizer report, a
# crash, a leak or an escaped write fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DFAAS_FUZZ=ON -DBUILD_TESTING=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-fuzz
echo "== unit tests under ASan + UBSan"
ctest --test-dir build-fuzz --output-on-failure -j2
targets=(manifest_fuzzer layer_fuzzer import_fuzzer registry_fuzzer api_fuzzer pull_fuzzer)
corpus=build-fuzz/corpus
/usr/bin/python3 fuzz/make_seeds.py "$corpus/seeds"
declare -A seeds=([manifest_fuzzer]=fuzz/seeds/manifest [layer_fuzzer]=$corpus/seeds/layer
                  [import_fuzzer]=$corpus/seeds/import [registry_fuzzer]=fuzz/seeds/registry
                  [api_fuzzer]=fuzz/seeds/http [pull_fuzzer]=fuzz/seeds/pull)
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target"
  echo "== $target for ${seconds}s"
  log=build-fuzz/$target.log
  if ! build-fuzz/fuzz/$target -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="build-fuzz/$target-" \
      "$corpus/$target" "${seeds[$target]}" >"$log" 2>&1; then
    tail -60 "$log"
    echo "$target FAILED (input saved as build-fuzz/$target-*)"
    exit 1
  fi
  grep -E "^(Done|stat::average_exec_per_sec|stat::new_units_added)" "$log"
done
