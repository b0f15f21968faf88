// What a reader asks of a function's log (GET /api/functions/NAME/logs), and the
// times of its records. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace faas::logs {

using Clock = std::chrono::system_clock;

// Which records of a log a reader wants. Every filter is optional.
struct LogQuery {
  std::optional<Clock::time_point> since;  // records at or after this time
  std::optional<size_t> tail;              // the last N of those (0: none, only new ones)
  std::string stream;                      // "stdout", "stderr", "request"; empty: all
  bool follow = false;                     // keep sending records as they are written
};

// Parses a request's query string (without the '?'): since=DUR|TIME (a duration as
// store::ParseDuration reads it, counted back from `now`, or an RFC 3339 time),
// tail=N, stream=stdout|stderr|request, follow=0|1 (or true|false); percent-encoding
// is decoded. Unknown parameters are ignored. kInvalidArgument names the parameter
// and the value that is wrong.
Result<LogQuery> ParseLogQuery(std::string_view query, Clock::time_point now);

// "2026-12-06T05:12:03.123Z": UTC, milliseconds.
std::string FormatTime(Clock::time_point time);

// An RFC 3339 time: "2026-12-06T05:12:03Z", with optional fractional seconds and a
// "Z" or "+HH:MM"/"-HH:MM" offset ('t', 'z' and a space for 'T' accepted too), in the
// years 1970 to 2200.
Result<Clock::time_point> ParseTime(std::string_view text);

// Receives the records of a followed log as they are written. Called on the event
// loop thread.
class LogFollower {
 public:
  virtual ~LogFollower() = default;
  // One record, as stored: a JSON object and its newline.
  virtual void OnRecord(std::string_view record) = 0;
  // No more records will come: the function was removed or faasd is stopping.
  virtual void OnEnd() = 0;
};

}  // namespace faas::logs
