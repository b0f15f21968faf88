#include "store/limits.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <thread>

#include "common/text.h"

namespace faas::store {
namespace {

Error Invalid(const std::string& what, std::string_view text, const std::string& hint) {
  return MakeError(Errc::kInvalidArgument,
                   "invalid " + what + " '" + std::string(text) + "': " + hint);
}

// Splits "12.5ms" into 12.5 and "ms".
bool SplitNumber(std::string_view text, double* value, std::string_view* unit) {
  size_t end = 0;
  while (end < text.size() && ((text[end] >= '0' && text[end] <= '9') || text[end] == '.')) ++end;
  if (end == 0) return false;
  std::string number(text.substr(0, end));
  char* parse_end = nullptr;
  *value = std::strtod(number.c_str(), &parse_end);
  if (parse_end != number.c_str() + number.size() || !std::isfinite(*value)) return false;
  *unit = text.substr(end);
  return true;
}

Result<std::string> StringOrNumber(const nlohmann::json& value, const char* key) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number()) return value.dump();
  return MakeError(Errc::kInvalidArgument, std::string("option '") + key + "' must be a string");
}

Result<int64_t> ParseCount(std::string_view text, const char* what, int64_t min, int64_t max) {
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || ptr != text.data() + text.size() || n < min || n > max)
    return Invalid(
        what, text,
        "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  return n;
}

// The scaling keys; false when `key` is not one of them.
Result<bool> ApplyScalingOption(const std::string& key, const std::string& text,
                                ScalingOptions* s) {
  if (key == "warm") {
    FAAS_ASSIGN_OR_RETURN(int64_t n, ParseCount(text, "warm", 0, 64));
    s->warm = static_cast<uint32_t>(n);
  } else if (key == "warm_max") {
    FAAS_ASSIGN_OR_RETURN(int64_t n, ParseCount(text, "warm-max", 0, 64));
    s->warm_max = static_cast<uint32_t>(n);
  } else if (key == "idle_timeout") {
    FAAS_ASSIGN_OR_RETURN(s->idle_timeout_ms, ParseDuration(text, "idle timeout"));
  } else if (key == "max_concurrency") {
    FAAS_ASSIGN_OR_RETURN(int64_t n, ParseCount(text, "max-concurrency", 1, 4096));
    s->max_concurrency = static_cast<uint32_t>(n);
  } else if (key == "queue") {
    FAAS_ASSIGN_OR_RETURN(int64_t n, ParseCount(text, "queue", 0, 65536));
    s->queue = static_cast<uint32_t>(n);
  } else if (key == "queue_timeout") {
    FAAS_ASSIGN_OR_RETURN(s->queue_timeout_ms, ParseDuration(text, "queue timeout"));
  } else if (key == "rate_limit") {
    FAAS_ASSIGN_OR_RETURN(s->rate_limit, ParseRate(text));
  } else if (key == "reuse") {
    FAAS_ASSIGN_OR_RETURN(int64_t n, ParseCount(text, "reuse", 1, 10000));
    s->reuse = static_cast<uint32_t>(n);
  } else {
    return false;
  }
  return true;
}

Status ApplyOption(const std::string& key, const nlohmann::json& value, DeployOptions* out) {
  FunctionLimits& l = out->limits;
  if (key == "env") {
    if (!value.is_array()) return MakeError(Errc::kInvalidArgument, "option 'env' must be a list");
    for (const auto& item : value) {
      if (!item.is_string())
        return MakeError(Errc::kInvalidArgument, "env entries must be strings");
      FAAS_RETURN_IF_ERROR(ValidateEnvEntry(item.get<std::string>()));
      out->env.push_back(item.get<std::string>());
    }
    return Ok();
  }
  FAAS_ASSIGN_OR_RETURN(std::string text, StringOrNumber(value, key.c_str()));
  FAAS_ASSIGN_OR_RETURN(bool scaling, ApplyScalingOption(key, text, &out->scaling));
  if (scaling) return Ok();
  if (key == "memory") {
    FAAS_ASSIGN_OR_RETURN(l.memory_bytes, ParseMemory(text));
  } else if (key == "cpus") {
    FAAS_ASSIGN_OR_RETURN(l.cpu_millis, ParseCpus(text));
  } else if (key == "pids") {
    FAAS_ASSIGN_OR_RETURN(l.pids, ParseCount(text, "pids limit", 1, 65536));
  } else if (key == "timeout") {
    FAAS_ASSIGN_OR_RETURN(l.timeout_ms, ParseDuration(text, "timeout"));
  } else if (key == "connect_timeout") {
    FAAS_ASSIGN_OR_RETURN(l.connect_timeout_ms, ParseDuration(text, "connect timeout"));
  } else {
    return MakeError(Errc::kInvalidArgument, "unknown deploy option '" + key + "'");
  }
  return Ok();
}

// Every option key, in the order messages list them.
constexpr const char* kOptionOrder[] = {"env",          "memory",
                                        "cpus",         "pids",
                                        "timeout",      "connect_timeout",
                                        "warm",         "warm_max",
                                        "idle_timeout", "max_concurrency",
                                        "queue",        "queue_timeout",
                                        "rate_limit",   "reuse"};

// Where `key` comes in messages; unknown keys last.
size_t OptionRank(const std::string& key) {
  const auto* end = std::end(kOptionOrder);
  return static_cast<size_t>(std::find(std::begin(kOptionOrder), end, key) -
                             std::begin(kOptionOrder));
}

// Removes the switch `key` from `given` and returns its value (`otherwise` when
// absent): a switch is about this deploy, not a setting the function keeps.
Result<bool> TakeSwitch(nlohmann::json* given, const std::string& key, bool otherwise) {
  auto it = given->find(key);
  if (it == given->end()) return otherwise;
  if (!it->is_boolean())
    return MakeError(Errc::kInvalidArgument, "option '" + key + "' must be true or false");
  bool value = it->get<bool>();
  given->erase(it);
  return value;
}

}  // namespace

uint32_t ScalingOptions::DefaultMaxConcurrency() {
  return 4 * std::max(1u, std::thread::hardware_concurrency());
}

Result<double> ParseRate(std::string_view text) {
  double value = 0;
  std::string_view unit;
  if (!SplitNumber(text, &value, &unit) || !(unit.empty() || unit == "/s"))
    return Invalid("rate limit", text, "expected requests per second like 100 or 0.5");
  if (value != 0 && (value < 0.01 || value > 1e6))
    return Invalid("rate limit", text, "must be 0 (off) or between 0.01 and 1000000 per second");
  return value;
}

Result<uint64_t> ParseMemory(std::string_view text) {
  double value = 0;
  std::string_view unit;
  const char* hint = "expected bytes or a size like 256M or 1G";
  if (!SplitNumber(text, &value, &unit)) return Invalid("memory", text, hint);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.remove_suffix(1);
  if (!unit.empty() && unit.back() == 'i') unit.remove_suffix(1);
  double scale = 1;
  if (unit == "k" || unit == "K") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "M") {
    scale = 1024.0 * 1024;
  } else if (unit == "g" || unit == "G") {
    scale = 1024.0 * 1024 * 1024;
  } else if (!unit.empty()) {
    return Invalid("memory", text, hint);
  }
  double bytes = value * scale;
  if (bytes < 4.0 * 1024 * 1024 || bytes > 1024.0 * 1024 * 1024 * 1024)
    return Invalid("memory", text, "must be between 4M and 1024G");
  return static_cast<uint64_t>(bytes);
}

Result<uint32_t> ParseCpus(std::string_view text) {
  double value = 0;
  std::string_view unit;
  if (!SplitNumber(text, &value, &unit) || !unit.empty())
    return Invalid("cpus", text, "expected a number of CPUs like 0.5 or 2");
  if (value < 0.01 || value > 64) return Invalid("cpus", text, "must be between 0.01 and 64");
  return static_cast<uint32_t>(std::lround(value * 1000));
}

Result<uint64_t> ParseDuration(std::string_view text, const std::string& what, DurationForm form) {
  double value = 0;
  std::string_view unit;
  const char* hint = "expected a duration like 500ms, 10s or 2m";
  if (!SplitNumber(text, &value, &unit)) return Invalid(what, text, hint);
  double unit_ms;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60 * 1000;
  } else if (unit == "h") {
    unit_ms = 3600 * 1000;
  } else if (unit.empty()) {
    unit_ms = static_cast<double>(form.bare_unit_ms);
  } else {
    return Invalid(what, text, hint);
  }
  const double ms = value * unit_ms;
  if (ms == 0 && form.zero_allowed) return uint64_t{0};
  if (ms < 1 || ms > 24.0 * 3600 * 1000) {
    return Invalid(
        what, text,
        form.zero_allowed ? "must be 0 or between 1ms and 24h" : "must be between 1ms and 24h");
  }
  return static_cast<uint64_t>(std::llround(ms));
}

Result<DeployOptions> ParseDeployOptions(std::string_view header, const FunctionLimits& defaults,
                                         const ScalingOptions& scaling_defaults,
                                         const nlohmann::json& previous) {
  DeployOptions out;
  out.limits = defaults;
  out.scaling = scaling_defaults;
  nlohmann::json given = nlohmann::json::object();
  if (!header.empty()) {
    given = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
    if (!given.is_object())
      return MakeError(Errc::kInvalidArgument, "X-Function-Options must be a JSON object");
  }
  // "reset": defaults instead of carried options; "start_check": see DeployOptions.
  FAAS_ASSIGN_OR_RETURN(bool reset, TakeSwitch(&given, "reset", false));
  FAAS_ASSIGN_OR_RETURN(out.start_check, TakeSwitch(&given, "start_check", true));
  out.set = given;
  if (!reset && previous.is_object()) {
    for (const auto& [key, value] : previous.items()) {
      if (given.contains(key)) continue;
      out.set[key] = value;
      out.carried.push_back(key);
    }
    std::stable_sort(
        out.carried.begin(), out.carried.end(),
        [](const std::string& a, const std::string& b) { return OptionRank(a) < OptionRank(b); });
  }
  for (const auto& [key, value] : out.set.items())
    FAAS_RETURN_IF_ERROR(ApplyOption(key, value, &out));
  ScalingOptions& s = out.scaling;
  if (s.warm > s.warm_max) {
    if (out.set.contains("warm_max"))
      return MakeError(Errc::kInvalidArgument, "warm (" + std::to_string(s.warm) +
                                                   ") is above warm-max (" +
                                                   std::to_string(s.warm_max) + ")");
    s.warm_max = s.warm;
  }
  return out;
}

std::vector<std::string> MergeEnv(std::vector<std::string> base,
                                  const std::vector<std::string>& overrides) {
  for (const auto& kv : overrides) {
    std::string key = kv.substr(0, kv.find('=') + 1);
    auto it = std::find_if(base.begin(), base.end(),
                           [&](const std::string& e) { return e.rfind(key, 0) == 0; });
    if (it != base.end()) {
      *it = kv;
    } else {
      base.push_back(kv);
    }
  }
  return base;
}

nlohmann::json ToJson(const FunctionLimits& l) {
  return {{"memory_bytes", l.memory_bytes},
          {"cpus", l.cpu_millis / 1000.0},
          {"pids", l.pids},
          {"timeout_ms", l.timeout_ms},
          {"connect_timeout_ms", l.connect_timeout_ms}};
}

FunctionLimits LimitsFromJson(const nlohmann::json& json, const FunctionLimits& defaults) {
  FunctionLimits l = defaults;
  if (!json.is_object()) return l;
  l.memory_bytes = json.value("memory_bytes", l.memory_bytes);
  if (json.contains("cpus") && json["cpus"].is_number())
    l.cpu_millis = static_cast<uint32_t>(std::lround(json["cpus"].get<double>() * 1000));
  l.pids = json.value("pids", l.pids);
  l.timeout_ms = json.value("timeout_ms", l.timeout_ms);
  l.connect_timeout_ms = json.value("connect_timeout_ms", l.connect_timeout_ms);
  return l;
}

nlohmann::json ToJson(const ScalingOptions& s) {
  return {{"warm", s.warm},
          {"warm_max", s.warm_max},
          {"idle_timeout_ms", s.idle_timeout_ms},
          {"max_concurrency", s.max_concurrency},
          {"queue", s.queue},
          {"queue_timeout_ms", s.queue_timeout_ms},
          {"rate_limit", s.rate_limit},
          {"reuse", s.reuse}};
}

ScalingOptions ScalingFromJson(const nlohmann::json& json, const ScalingOptions& defaults) {
  ScalingOptions s = defaults;
  if (!json.is_object()) return s;
  s.warm = json.value("warm", s.warm);
  s.warm_max = std::max(s.warm, json.value("warm_max", s.warm_max));
  s.idle_timeout_ms = json.value("idle_timeout_ms", s.idle_timeout_ms);
  s.max_concurrency = std::max(1u, json.value("max_concurrency", s.max_concurrency));
  s.queue = json.value("queue", s.queue);
  s.queue_timeout_ms = json.value("queue_timeout_ms", s.queue_timeout_ms);
  s.rate_limit = json.value("rate_limit", s.rate_limit);
  s.reuse = std::max(1u, json.value("reuse", s.reuse));
  return s;
}

}  // namespace faas::store
