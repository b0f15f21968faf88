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

// How a function's containers are started ahead and how its requests are admitted.
struct ScalingOptions {
  // Containers kept started ahead. 0: no pool at all (each request starts its container;
  // warm_max and reuse then keep none between requests either).
  uint32_t warm = 0;
  uint32_t warm_max = 8;              // the adaptive pool (warm >= 1) never grows past this
  uint64_t idle_timeout_ms = 300000;  // without requests this long, the pool shrinks to 0
  uint32_t max_concurrency = DefaultMaxConcurrency();  // containers serving clients at once
  uint32_t queue = 64;                                 // clients waiting for a slot; more get 503
  uint64_t queue_timeout_ms = 10000;                   // longest wait in the queue before a 503
  double rate_limit = 0;  // requests per second (token bucket, burst = rate); 0: off
  uint32_t reuse = 1;     // clients one container serves in turn (1: a fresh one each)

  static uint32_t DefaultMaxConcurrency();  // 4 x the CPUs faasd may use
};

// "1048576", "512K", "256M", "1G" (binary units, optional "i"/"B" suffix). At least 4 MiB.
Result<uint64_t> ParseMemory(std::string_view text);
// "0.5", "2": CPUs, to thousandths; 0.01 to 64.
Result<uint32_t> ParseCpus(std::string_view text);
// What a bare number means to ParseDuration, and whether 0 is a duration.
struct DurationForm {
  uint64_t bare_unit_ms = 1000;  // a number without a unit counts these: seconds by default
  bool zero_allowed = false;     // "0" (any unit) means "none", e.g. no wait at all
};
// "500ms", "10s", "2m", "1h", or a bare number of `form.bare_unit_ms`; in milliseconds,
// 1 ms (0 when `form.zero_allowed`) to 24 h. Every time setting of faasd and faas parses
// through here. `what` names the setting in the error ("invalid idle timeout '0s': ...").
Result<uint64_t> ParseDuration(std::string_view text, const std::string& what = "duration",
                               DurationForm form = {});

// "100", "0.5", "100/s": requests per second; 0 turns the limit off.
Result<double> ParseRate(std::string_view text);

// What a deploy may ask for, as sent by `faas new` in the X-Function-Options
// header: {"memory":"256M","cpus":"0.5","pids":32,"timeout":"10s",
// "connect_timeout":"2s","env":["K=V"],"warm":2,"warm_max":8,"idle_timeout":"5m",
// "max_concurrency":8,"queue":64,"queue_timeout":"10s","rate_limit":100,"reuse":1,
// "reset":true,"start_check":false}.
// Unknown keys are an error; so is an env entry ValidateEnvEntry (common/text.h) refuses,
// and "warm" above an explicit "warm_max" (a "warm" above the default "warm_max" raises it).
//
// A redeploy keeps what it does not change: the options the previous version set
// (`previous`, its record's `set`) apply where the header gives no value of its own,
// "env" as a whole. With "reset": true nothing is carried over: what the header does
// not give is the default.
struct DeployOptions {
  FunctionLimits limits;
  ScalingOptions scaling;
  std::vector<std::string> env;
  // The options in force as the header spells them, the switches "reset" and
  // "start_check" left out: those given
  // and those carried over. The record keeps them, to carry them on.
  nlohmann::json set = nlohmann::json::object();
  // The keys of `set` carried over from `previous`, "env" first, then in the order above.
  std::vector<std::string> carried;
  // Whether the deploy starts one container of the new version (and waits for its
  // handler's connect) before it answers. Not a setting of the function: not saved.
  bool start_check = true;
};
Result<DeployOptions> ParseDeployOptions(std::string_view header, const FunctionLimits& defaults,
                                         const ScalingOptions& scaling_defaults = {},
                                         const nlohmann::json& previous = nlohmann::json::object());

// Image Env with `overrides` applied: same key replaced, new keys appended.
std::vector<std::string> MergeEnv(std::vector<std::string> base,
                                  const std::vector<std::string>& overrides);

nlohmann::json ToJson(const FunctionLimits& limits);
FunctionLimits LimitsFromJson(const nlohmann::json& json, const FunctionLimits& defaults);
nlohmann::json ToJson(const ScalingOptions& scaling);
ScalingOptions ScalingFromJson(const nlohmann::json& json, const ScalingOptions& defaults);

}  // namespace faas::store
