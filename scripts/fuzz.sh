#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each one for
# FUZZ_SECONDS (default 30) from the seed corpus in fuzz/seeds plus generated
# tar seeds. A crash, leak or escaped write fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DFAAS_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=(manifest_fuzzer layer_fuzzer import_fuzzer registry_fuzzer api_fuzzer)
ninja -C build-fuzz "${targets[@]}"
corpus=build-fuzz/corpus
/usr/bin/python3 fuzz/make_seeds.py "$corpus/seeds"
declare -A seeds=([manifest_fuzzer]=fuzz/seeds/manifest [layer_fuzzer]=$corpus/seeds/layer
                  [import_fuzzer]=$corpus/seeds/import [registry_fuzzer]=fuzz/seeds/registry
                  [api_fuzzer]=fuzz/seeds/http)
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
