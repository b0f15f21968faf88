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
// runc process) and releases all of it in every path; the destructor is the last
// line of defence. Lives on the event loop thread; not thread-safe.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/fd.h"
#include "runtime/bundle.h"
#include "runtime/process.h"
#include "store/limits.h"

namespace faas::server {

struct RuntimeOptions {
  std::string runtime = "/usr/sbin/runc";  // an OCI runtime with runc's CLI (runc, crun)
  std::string runtime_root;                // --root for the runtime: its container state
  std::string bundles_dir;                 // STATE/bundles
  std::string cgroup_parent = "/faasd";
  std::chrono::milliseconds kill_grace{3000};
};

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

struct FunctionSnapshot {
  std::string name;
  std::shared_ptr<RootfsVersion> rootfs;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string working_dir;
  uint32_t uid = 0;
  uint32_t gid = 0;
  store::FunctionLimits limits;
  uint32_t userns_base = 0;
  uint32_t reuse = 1;  // clients one container serves in turn
};

class Container : public std::enable_shared_from_this<Container> {
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
  using Callback = std::function<void(Container*)>;

  // `client` may be empty: the container is started ahead and gets one by Attach().
  // `on_done` runs once everything is cleaned up; `on_idle` when a container that
  // may serve several clients (FunctionSnapshot::reuse) is ready for its next one.
  Container(boost::asio::io_context& io, const RuntimeOptions& options, FunctionSnapshot function,
            std::string id, UniqueFd client, Callback on_done, Callback on_idle = nullptr);
  ~Container();

  // Writes the bundle and starts the runtime. Failures end in cleanup, then on_done.
  void Start();
  // Gives a container without a client (started ahead, or back for another under
  // reuse) its client: handed over now when the handler is ready, else as soon as
  // it connects. False (and the client is left with the caller) when the container
  // cannot take one.
  bool Attach(UniqueFd& client);
  // Kills the container now (shutdown, drain timeout, pool shrinking). Cleanup
  // follows as usual.
  void Kill(const char* why);

  const std::string& id() const { return id_; }
  const std::string& function_name() const { return function_.name; }
  State state() const { return state_; }
  bool ready() const { return state_ == State::kReady; }
  // Whether it has been given a client.
  bool served() const { return uses_ > 0; }
  // Whether it may come back for another client after the current one.
  bool may_serve_again() const { return !killed_ && uses_ < function_.reuse; }

 private:
  void Fail(const std::string& why);
  void WaitForConnect();
  void OnControlReadable();
  bool HandOver();
  Status CheckPeer(int conn) const;
  void CloseControlListener();
  void WaitForExit();
  void OnExited();
  void StartTimer(std::chrono::milliseconds after, const char* what);
  void OnTimeout(const char* what);
  void ReadOutput();
  void LogOutput(bool flush);
  void Cleanup();
  bool RemoveCgroups();
  void DeleteRuntimeState();
  void Finish();
  void RemoveBundle();
  static bool OutOfResources(const Error& error);
  void RetryLater(std::function<void()> step);
  std::string BundleDir() const { return options_.bundles_dir + "/" + id_; }

  const RuntimeOptions& options_;
  FunctionSnapshot function_;
  std::string id_;
  UniqueFd client_;
  Callback on_done_;
  Callback on_idle_;
  State state_ = State::kNew;
  bool bundle_created_ = false;
  bool killed_ = false;
  uint32_t uses_ = 0;  // clients attached so far
  std::string outcome_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point attached_at_;
  // Where a container's time goes, logged at debug level when it is cleaned up.
  struct Phases {
    std::chrono::steady_clock::time_point prepared, spawned, connected, handed, exited;
  } phases_;
  void LogPhases() const;

  UniqueFd control_listener_;
  UniqueFd control_conn_;  // the handler's connection, held while Ready
  boost::asio::posix::stream_descriptor control_wait_;
  runtime::Child runc_;
  boost::asio::posix::stream_descriptor exit_wait_;
  runtime::Child helper_;  // runc kill / runc delete
  boost::asio::posix::stream_descriptor helper_wait_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer cgroup_retry_;  // also paces RetryLater
  int cgroup_attempts_ = 0;
  std::chrono::milliseconds retry_delay_{0};
  // The runtime's and the handler's stdout and stderr, logged line by line up to a cap.
  boost::asio::posix::stream_descriptor output_;
  std::array<char, 4096> output_buffer_{};
  std::string output_line_;
  size_t output_logged_ = 0;
  bool output_truncated_ = false;
  static constexpr size_t kMaxOutputLogged = 16 << 10;
};

}  // namespace faas::server
