#include "logs/query.h"

#include <time.h>

#include <charconv>
#include <cstdio>

#include "common/text.h"
#include "store/limits.h"

namespace faas::logs {
namespace {

using std::chrono::milliseconds;

// The number at text[pos, pos+len), or -1.
int Digits(std::string_view text, size_t pos, size_t len) {
  if (pos + len > text.size()) return -1;
  int value = 0;
  auto [end, ec] = std::from_chars(text.data() + pos, text.data() + pos + len, value);
  return ec == std::errc() && end == text.data() + pos + len ? value : -1;
}

bool At(std::string_view text, size_t pos, std::string_view chars) {
  return pos < text.size() && chars.find(text[pos]) != std::string_view::npos;
}

// The offset east of UTC in seconds of "Z" or "+HH:MM" at the end of `text`.
std::optional<long> Offset(std::string_view zone) {  // NOLINT(runtime/int)
  if (zone == "Z" || zone == "z") return 0;
  if (zone.size() != 6 || !At(zone, 0, "+-") || zone[3] != ':') return std::nullopt;
  const int hours = Digits(zone, 1, 2), minutes = Digits(zone, 4, 2);
  if (hours < 0 || hours > 23 || minutes < 0 || minutes > 59) return std::nullopt;
  const long seconds = hours * 3600L + minutes * 60L;  // NOLINT(runtime/int)
  return zone[0] == '-' ? -seconds : seconds;
}

Result<size_t> ParseTail(std::string_view text) {
  size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    return MakeError(Errc::kInvalidArgument,
                     "invalid tail '" + std::string(text) + "': expected a number of lines");
  return value;
}

Result<Clock::time_point> ParseSince(std::string_view text, Clock::time_point now) {
  if (text.find_first_of("-:T") != std::string_view::npos) {
    auto time = ParseTime(text);
    if (time.ok()) return time;
    return MakeError(Errc::kInvalidArgument, "invalid since '" + std::string(text) +
                                                 "': expected a duration (10m) or an RFC 3339 "
                                                 "time (2026-12-06T05:12:03Z)");
  }
  auto ms = store::ParseDuration(text, "since");
  if (!ms.ok())
    return MakeError(Errc::kInvalidArgument, ms.error().message + " (or an RFC 3339 time)");
  return now - milliseconds(*ms);
}

Status ApplyParam(std::string_view key, const std::string& value, Clock::time_point now,
                  LogQuery& query) {
  if (key == "since") {
    FAAS_ASSIGN_OR_RETURN(query.since, ParseSince(value, now));
  } else if (key == "tail") {
    FAAS_ASSIGN_OR_RETURN(query.tail, ParseTail(value));
  } else if (key == "stream") {
    if (value != "stdout" && value != "stderr" && value != "request")
      return MakeError(Errc::kInvalidArgument,
                       "invalid stream '" + value + "': expected stdout, stderr or request");
    query.stream = value;
  } else if (key == "follow") {
    if (value != "0" && value != "1" && value != "true" && value != "false")
      return MakeError(Errc::kInvalidArgument, "invalid follow '" + value + "': expected 1 or 0");
    query.follow = value == "1" || value == "true";
  }
  return Ok();
}

}  // namespace

Result<LogQuery> ParseLogQuery(std::string_view query, Clock::time_point now) {
  LogQuery out;
  while (!query.empty()) {
    std::string_view param = query.substr(0, query.find('&'));
    query.remove_prefix(std::min(query.size(), param.size() + 1));
    const size_t eq = param.find('=');
    const std::string_view key = param.substr(0, eq);
    FAAS_ASSIGN_OR_RETURN(
        std::string value,
        PercentDecode(eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1)));
    FAAS_RETURN_IF_ERROR(ApplyParam(key, value, now, out));
  }
  return out;
}

std::string FormatTime(Clock::time_point time) {
  const auto ms = std::chrono::floor<milliseconds>(time.time_since_epoch()).count();
  const time_t seconds = static_cast<time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[96];  // room for any int the compiler cannot rule out
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms - static_cast<int64_t>(seconds) * 1000));
  return buf;
}

Result<Clock::time_point> ParseTime(std::string_view text) {
  const auto bad = [&] {
    return MakeError(Errc::kInvalidArgument, "invalid time '" + std::string(text) + "'");
  };
  struct tm tm {};
  tm.tm_year = Digits(text, 0, 4) - 1900;
  tm.tm_mon = Digits(text, 5, 2) - 1;
  tm.tm_mday = Digits(text, 8, 2);
  tm.tm_hour = Digits(text, 11, 2);
  tm.tm_min = Digits(text, 14, 2);
  tm.tm_sec = Digits(text, 17, 2);
  // From 1970 to 2200: a system_clock time point counts nanoseconds in 64 bits.
  if (tm.tm_year < 70 || tm.tm_year > 300 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
      tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 ||
      tm.tm_sec < 0 || tm.tm_sec > 60 || !At(text, 4, "-") || !At(text, 7, "-") ||
      !At(text, 10, "Tt ") || !At(text, 13, ":") || !At(text, 16, ":"))
    return bad();
  size_t pos = 19;
  int64_t nanos = 0;
  if (At(text, pos, ".")) {
    int64_t scale = 100000000;
    for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos, scale /= 10)
      nanos += (text[pos] - '0') * scale;
  }
  const auto offset = Offset(text.substr(std::min(pos, text.size())));
  if (!offset) return bad();
  const time_t seconds = timegm(&tm) - *offset;
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(seconds) + std::chrono::nanoseconds(nanos)));
}

}  // namespace faas::logs
