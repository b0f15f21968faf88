#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace faas {

Status SetupLogging(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off")
    return MakeError(Errc::kInvalidArgument, "unknown log level '" + level + "'");
  auto logger = spdlog::stderr_logger_mt("faasd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(parsed);
  return Ok();
}

}  // namespace faas
