// One container serving one client connection: the request state machine.
//
//   Spawning -> WaitingForConnect -> [Ready] -> Handed -> Exited -> Cleaned
//
// with Timeout/Failed edges into cleanup. A container started for a client hands
// it over as soon as the handler connects. A container started ahead (warm pool)
// has no client yet: once its handler connected it waits in Ready, holding the
// control connection, until Attach() gives it one, which is then sent at once.
// Either way a container serves exactly one client.
//
// A Container owns everything it created (client fd, bundle dir, control socket,
// runtime process) and releases all of it in every path; the destructor is the
// last line of defence. Every fd the event loop waits on is owned by its Asio
// descriptor alone. The OCI runtime is reached only through runtime::Runtime.
// Lives on the event loop thread; not thread-safe.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "runtime/bundle.h"
#include "runtime/process.h"
#include "runtime/runtime.h"
#include "server/clock.h"
#include "server/instance.h"
#include "server/telemetry.h"

namespace faas::server {

// A read-only rootfs directory shared by all requests of one function version.
// When a redeploy replaces it, it is retired: the directory is removed once the
// last request using it has finished (the last shared_ptr goes away).
class RootfsVersion {
 public:
  using Remover = std::function<void(std::string)>;
  RootfsVersion(std::string path, Remover remover)
      : path_(std::move(path)), remover_(std::move(remover)) {}
  ~RootfsVersion() {
    if (!retired_path_.empty()) remover_(retired_path_);
  }
  const std::string& path() const { return path_; }
  // Marks the directory, now moved to `moved_to`, for removal when unused.
  void Retire(std::string moved_to) { retired_path_ = std::move(moved_to); }

 private:
  std::string path_;
  std::string retired_path_;
  Remover remover_;
};

// What one container runs: its function's settings as a container spec (see
// functions.cc for the one place that builds it from the function's record).
struct ContainerConfig {
  std::string function;                   // its name, for logs
  uint64_t version = 0;                   // the function's version it runs
  std::shared_ptr<RootfsVersion> rootfs;  // held for the container's life
  // All but control_socket and cgroups_path, which the container fills in.
  runtime::ContainerSpec spec;
  std::chrono::milliseconds connect_timeout{5000};
  // Gets the handler's output lines and a record of each client's request; none: not
  // reported. Must outlive the container.
  Telemetry* telemetry = nullptr;
};

class Container final : public Instance, public std::enable_shared_from_this<Container> {
 public:
  enum class State {
    kNew,
    kSpawning,
    kWaitingForConnect,
    kReady,
    kHanded,
    kExited,
    kCleaning,
    kCleaned
  };

  // `client` may be empty: the container is started ahead and gets one by Attach().
  // Its bundle is `bundle_dir` (created by Start, removed at the end); `runtime`
  // must outlive it.
  Container(boost::asio::io_context& io, runtime::Runtime& runtime, ContainerConfig config,
            std::string id, std::string bundle_dir, Client client, Events events);
  ~Container() override;

  // Writes the bundle and starts the runtime. Failures end in cleanup, then on_done.
  void Start() override;
  // Gives a container without a client (started ahead, or back for another under
  // reuse) its client: handed over now when the handler is ready, else as soon as
  // it connects. False (and the client is left with the caller) when the container
  // cannot take one.
  bool Attach(Client& client) override;
  // Kills the container now (shutdown, drain timeout, pool shrinking). Cleanup
  // follows as usual.
  void Kill(const char* why) override;
  void SetEvents(Events events) override { events_ = std::move(events); }

  const std::string& id() const { return id_; }
  const std::shared_ptr<RootfsVersion>& rootfs() const { return config_.rootfs; }
  // How it ended, for logs ("exit 3", "connect timeout", "failed: ..."), and as a
  // kind: complete once `done`.
  const std::string& outcome() const { return outcome_; }
  enum class Ending { kNone, kExited, kConnectTimeout, kRunTimeout, kKilled, kFailed };
  Ending ending() const { return ending_; }
  // The last lines (at most kTailLines) of the runtime's and the handler's output,
  // stdout and stderr: complete once `done`.
  std::vector<std::string> last_output() const {
    return {output_tail_.begin(), output_tail_.end()};
  }
  static constexpr size_t kTailLines = 10;
  // The last `lines` of last_output(), each cut at 256 bytes, joined by " | ": what an
  // error or a warning quotes of a container that ended before its handler connected.
  std::string OutputSummary(size_t lines = kTailLines) const;
  // Output lines longer than this are cut here (OutputLine::cut) and the rest of the
  // line is dropped.
  static constexpr size_t kMaxLine = 16 << 10;
  const std::string& function_name() const { return config_.function; }
  State state() const { return state_; }
  bool ready() const override { return state_ == State::kReady; }
  bool served() const override { return uses_ > 0; }
  bool may_serve_again() const override { return !killed_ && uses_ < config_.spec.reuse; }

 private:
  // How many of the last output lines the warning about a container that ended
  // before its handler connected quotes in faasd's log.
  static constexpr size_t kWarningLines = 3;
  Status Prepare();
  Status Spawn();
  void Fail(const Error& error);
  void WaitForConnect();
  void OnControlReadable();
  bool HandOver();
  Status CheckPeer(int conn) const;
  void CloseControlListener();
  void WaitForExit();
  void OnExited();
  void StartTimer(std::chrono::milliseconds after, const char* what);
  void OnTimeout(const char* what);
  struct OutputPipe;
  void ReadOutput(OutputPipe& pipe);
  void Feed(OutputPipe& pipe, std::string_view data);
  void Flush(OutputPipe& pipe);
  void EmitLine(OutputPipe& pipe, bool cut);
  void DrainOutput(OutputPipe& pipe);
  void EndRequest(Outcome outcome, int answered, std::optional<int> exit_status = {});
  void Cleanup();
  void DeleteRuntimeState();
  void Finish();
  void RemoveBundle();
  static bool OutOfResources(const Error& error);
  void RetryLater(std::function<void()> step);

  runtime::Runtime& runtime_;
  ContainerConfig config_;
  std::string id_;
  std::string bundle_dir_;
  Client client_;              // its fd is empty once handed over; the rest stays for the record
  bool request_open_ = false;  // a client's request is under way: EndRequest reports it
  StartKind start_ = StartKind::kCold;
  Events events_;
  State state_ = State::kNew;
  bool bundle_created_ = false;
  bool killed_ = false;
  uint32_t uses_ = 0;  // clients attached so far
  std::string outcome_;
  Ending ending_ = Ending::kNone;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point attached_at_;
  // Where a container's time goes, logged at debug level when it is cleaned up.
  struct Phases {
    std::chrono::steady_clock::time_point prepared, spawned, connected, handed, exited;
  } phases_;
  void LogPhases() const;

  boost::asio::posix::stream_descriptor control_listener_;  // the bundle's control.sock
  UniqueFd control_conn_;  // the handler's connection, held while Ready
  runtime::Child run_;     // the runtime's `run`; exit_wait_ owns its pidfd
  boost::asio::posix::stream_descriptor exit_wait_;
  runtime::Child helper_;  // the runtime's `delete`; helper_wait_ owns its pidfd
  boost::asio::posix::stream_descriptor helper_wait_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer cgroup_retry_;  // also paces RetryLater
  int cgroup_attempts_ = 0;
  std::chrono::milliseconds retry_delay_{0};
  // The runtime's and the handler's stdout and stderr, each on its pipe, reported
  // line by line.
  struct OutputPipe {
    OutputPipe(boost::asio::io_context& io, Stream stream) : reader(io), stream(stream) {}
    boost::asio::posix::stream_descriptor reader;
    Stream stream;
    std::array<char, 4096> buffer{};
    std::string line;       // the line so far
    bool skipping = false;  // the rest of a line that was cut
  };
  OutputPipe stdout_;
  OutputPipe stderr_;
  std::deque<std::string> output_tail_;
};

}  // namespace faas::server
