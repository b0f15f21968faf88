// Per-function resource limits and deploy options, and the parsers for their
// human forms ("256M", "0.5", "10s"). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::store {

struct FunctionLimits {
  uint64_t memory_bytes = 512ull << 20;
  uint32_t cpu_millis = 1000;  // 1000 = one CPU
  int64_t pids = 64;
  uint64_t timeout_ms = 30000;         // after the handover
  uint64_t connect_timeout_ms = 5000;  // from the start to the handler's connect
};

// "1048576", "512K", "256M", "1G" (binary units, optional "i"/"B" suffix). At least 4 MiB.
Result<uint64_t> ParseMemory(std::string_view text);
// "0.5", "2": CPUs, to thousandths; 0.01 to 64.
Result<uint32_t> ParseCpus(std::string_view text);
// "500ms", "10s", "2m", or a bare number of seconds; 1 ms to 24 h.
Result<uint64_t> ParseDuration(std::string_view text);

// What a deploy may ask for, as sent by `faas new` in the X-Function-Options
// header: {"memory":"256M","cpus":"0.5","pids":32,"timeout":"10s",
// "connect_timeout":"2s","env":["K=V"]}. Unknown keys are an error.
struct DeployOptions {
  FunctionLimits limits;
  std::vector<std::string> env;
};
Result<DeployOptions> ParseDeployOptions(std::string_view header, const FunctionLimits& defaults);

// Image Env with `overrides` applied: same key replaced, new keys appended.
std::vector<std::string> MergeEnv(std::vector<std::string> base,
                                  const std::vector<std::string>& overrides);

nlohmann::json ToJson(const FunctionLimits& limits);
FunctionLimits LimitsFromJson(const nlohmann::json& json, const FunctionLimits& defaults);

}  // namespace faas::store
