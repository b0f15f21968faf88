// Per-function logs: what each function's containers write on stdout and stderr,
// one line per request, kept on disk and followed live (`faas logs`).
//
//   STATE/logs/NAME/current.log    records, one JSON object per line, oldest first
//   STATE/logs/NAME/previous.log   the records before them
//
// A record is {"time":"2026-12-06T05:12:03.123Z","stream":S,"version":N,...} with the
// time first and the stream second (the reader filters on both without parsing),
// S one of:
//   "stdout", "stderr"  "container", "line" (control bytes and invalid UTF-8 escaped
//                       as \xNN, common/text.h), "cut": true when the line was longer
//                       than kMaxLine bytes and this is its start
//   "request"           "container", "client" (ADDR:PORT), "start" (cold, warm, none),
//                       "queue_ms", "duration_ms", "exit_status" (when the handler
//                       exited), "answered" (faasd's own HTTP status, when it answered),
//                       "outcome" (server::OutcomeName)
//   "faasd"             "line": "N lines dropped" after a burst over the budget
//
// Bounds: current.log grows to half of `max_bytes`, then becomes previous.log (the
// older one is deleted), so a function's log never takes more than `max_bytes`. Each
// function has a token bucket of `rate_bytes` per second with a burst as large; a
// record that finds too few tokens is dropped and counted (DroppedLines). Records are
// written with one write(2) each to an O_APPEND fd kept open per function, never
// fsynced: a crash may lose the last ones, the page cache keeps the rest.
//
// Everything runs on the event loop thread; nothing here is thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/fd.h"
#include "logs/query.h"
#include "server/telemetry.h"

namespace faas::logs {

struct LogOptions {
  std::string dir;                   // STATE/logs
  uint64_t max_bytes = 8ull << 20;   // per function, both files together
  uint64_t rate_bytes = 1ull << 20;  // bytes per second per function; the burst is as large
  bool journald = false;             // also send each output line to journald
};

// Longest line kept, in bytes before escaping; the rest of a longer one is dropped.
inline constexpr size_t kMaxLine = 16 << 10;
// The smallest --log-size: a file must hold a few records of kMaxLine.
inline constexpr uint64_t kMinLogBytes = 256 << 10;

class FunctionLogs final : public server::Telemetry {
 public:
  FunctionLogs(boost::asio::io_context& io, LogOptions options);
  ~FunctionLogs() override;
  FunctionLogs(const FunctionLogs&) = delete;
  FunctionLogs& operator=(const FunctionLogs&) = delete;

  // Creates the logs directory (0700) and removes the log of every function not in
  // `live` (the registry's names); what cannot be removed is returned, one error each.
  std::vector<Error> Start(const std::set<std::string>& live);

  void OnRequest(const server::RequestRecord& record) override;
  void OnOutput(const server::OutputLine& line) override;
  // A container of a function removed earlier is a new deploy's: its log starts anew.
  void OnContainerStarted(std::string_view function, bool pooled) override;
  // A deployed function has its log file open from then on, whether it writes or not:
  // faasd holds one fd per function's log, not one that comes with the first line.
  void OnDeploy(const server::DeployRecord& record) override;
  // Ends its followers, closes and deletes the function's log. What the removed
  // function's last containers still write is not kept.
  void OnRemoved(const std::string& function) override;

  // The records of `function` that match `query` (its `since`, `stream` and `tail`;
  // not `follow`), oldest first, each with its newline.
  Result<std::string> Read(const std::string& function, const LogQuery& query) const;

  // Sends `follower` each new record of `function` matching `query.stream` until the
  // returned handle is destroyed, the function is removed or EndFollowers runs. The
  // follower must outlive the handle.
  std::shared_ptr<void> Follow(const std::string& function, const LogQuery& query,
                               LogFollower* follower);
  // Ends every follower (faasd is stopping).
  void EndFollowers();

  // The records of `function` dropped over its budget since faasd started (0 for an
  // unknown function).
  uint64_t DroppedLines(const std::string& function) const;

 private:
  struct Followers;
  struct FunctionState;

  FunctionState& State(const std::string& function);
  // Writes one record to `function`'s log if its budget allows and says whether it
  // did; counts it otherwise.
  bool Append(const std::string& function, const std::string& record);
  // Adds the tokens earned since the last refill, up to the burst.
  void Refill(FunctionState& state) const;
  void Write(const std::string& function, FunctionState& state, const std::string& record);
  Status Rotate(const std::string& function, FunctionState& state);
  void WriteDropMarker(const std::string& function, FunctionState& state);
  void ArmDropTimer();
  void FlushDropMarkers();
  std::string Dir(const std::string& function) const { return options_.dir + "/" + function; }

  LogOptions options_;
  std::map<std::string, FunctionState, std::less<>> functions_;
  std::set<std::string, std::less<>> removed_;  // until a container starts again
  std::shared_ptr<Followers> followers_;
  boost::asio::steady_timer drop_timer_;
  bool drop_timer_armed_ = false;
};

}  // namespace faas::logs
