// What the request path reports about itself: one record per client connection,
// one per line a handler writes, one per deploy. The function log store and the
// metrics implement Telemetry; the containers, scalers and the deployer call it.
// Everything here runs on the event loop thread; implementations must not block
// it for long (a write to the page cache is fine, a network round trip is not).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace faas::server {

// How a client's request ended, as the metrics label it.
enum class Outcome {
  kOk,             // the handler served it and exited 0 (or came back for another)
  kHandlerError,   // the handler exited non-zero, or before it took the client
  kTimeout,        // no connect within connect_timeout (504), or the run timeout hit
  kRejectedQueue,  // 503: the queue was full, its wait timed out, or the function went
  kRejectedRate,   // 429: over the rate limit
  kRuntimeError,   // faasd or the runtime failed (500, 502 on a failed hand-over, killed)
};
// "ok", "handler_error", "timeout", "rejected_queue", "rejected_rate", "runtime_error".
const char* OutcomeName(Outcome outcome);

// How the client's container was found.
enum class StartKind {
  kNone,  // none: faasd answered (429, 503) without one
  kCold,  // started for this client, or still starting when the client took it
  kWarm,  // waiting ready in the pool (or a reused one back for its next client)
};
// "none", "cold", "warm".
const char* StartKindName(StartKind start);

struct RequestRecord {
  std::string function;
  uint64_t version = 0;   // the version that served it (0: none yet, e.g. rejected)
  std::string client;     // the peer, "ADDR:PORT"
  std::string container;  // the container's id; empty when faasd answered alone
  StartKind start = StartKind::kNone;
  Outcome outcome = Outcome::kOk;
  std::chrono::system_clock::time_point accepted;  // when faasd accepted the connection
  std::chrono::microseconds queue_wait{0};         // in the function's admission queue
  // From accepting the connection to the end of the handler's work on it (its exit,
  // or its coming back for the next client), or to faasd's own answer.
  std::chrono::microseconds duration{0};
  std::optional<int> exit_status;  // the handler's exit code (128+N for signal N)
  int answered = 0;                // the HTTP status faasd answered itself; 0: none
};

enum class Stream { kStdout, kStderr };
// "stdout", "stderr".
const char* StreamName(Stream stream);

// One line a handler (or the runtime, on stderr) wrote, without its newline. Not
// cut or escaped yet: that is the log store's job.
struct OutputLine {
  std::string_view function;
  uint64_t version = 0;
  std::string_view container;
  Stream stream = Stream::kStdout;
  std::chrono::system_clock::time_point time;
  std::string_view text;
  // The line was longer than Container::kMaxLine bytes: this is its start.
  bool cut = false;
};

enum class DeployOutcome {
  kOk,
  kBadImage,     // the archive or image was refused
  kStartFailed,  // the start check: the new version's handler did not connect
  kConflict,     // another deploy of the name was under way
  kCancelled,    // the client went away before the answer
  kFailed,       // anything else (faasd's own fault, a shutdown)
};
// "ok", "bad_image", "start_failed", "conflict", "cancelled", "failed".
const char* DeployOutcomeName(DeployOutcome outcome);

struct DeployRecord {
  std::string function;
  DeployOutcome outcome = DeployOutcome::kOk;
  uint64_t version = 0;                 // the new version, when committed
  std::chrono::microseconds import{0};  // reading and unpacking the image
  std::chrono::microseconds total{0};   // from the first byte to the answer
};

// Every method has an empty default: implement what you need.
class Telemetry {
 public:
  virtual ~Telemetry() = default;
  virtual void OnRequest(const RequestRecord& /*record*/) {}
  virtual void OnOutput(const OutputLine& /*line*/) {}
  // A container of `function` was started; `pooled`: ahead of any client.
  virtual void OnContainerStarted(std::string_view /*function*/, bool /*pooled*/) {}
  virtual void OnDeploy(const DeployRecord& /*record*/) {}
  // `function` was removed (`faas rm`): drop what is kept about it.
  virtual void OnRemoved(const std::string& /*function*/) {}
};

// Passes every call on to each of its sinks, in the order they were added.
class TelemetryFanout final : public Telemetry {
 public:
  void Add(Telemetry* sink) { sinks_.push_back(sink); }
  void OnRequest(const RequestRecord& record) override {
    for (auto* sink : sinks_) sink->OnRequest(record);
  }
  void OnOutput(const OutputLine& line) override {
    for (auto* sink : sinks_) sink->OnOutput(line);
  }
  void OnContainerStarted(std::string_view function, bool pooled) override {
    for (auto* sink : sinks_) sink->OnContainerStarted(function, pooled);
  }
  void OnDeploy(const DeployRecord& record) override {
    for (auto* sink : sinks_) sink->OnDeploy(record);
  }
  void OnRemoved(const std::string& function) override {
    for (auto* sink : sinks_) sink->OnRemoved(function);
  }

 private:
  std::vector<Telemetry*> sinks_;
};

}  // namespace faas::server
