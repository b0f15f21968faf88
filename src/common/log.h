// Logging: one line per event to stderr, with level. Thin wrapper over spdlog.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "common/error.h"

namespace faas {

// Sets up the stderr logger. `level` is one of trace, debug, info, warn, error.
Status SetupLogging(const std::string& level);

}  // namespace faas
