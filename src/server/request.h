// One container serving one client connection: the request state machine.
//
//   Spawning -> WaitingForConnect -> Handed -> Exited -> Cleaned
//
// with Timeout/Failed edges into cleanup. A Container owns everything it created
// (client fd, bundle dir, control socket, runc process) and releases all of it in
// every path; the destructor is the last line of defence. Lives on the event loop
// thread; not thread-safe.
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
};

class Container : public std::enable_shared_from_this<Container> {
 public:
  enum class State { kNew, kSpawning, kWaitingForConnect, kHanded, kExited, kCleaning, kCleaned };
  using DoneCallback = std::function<void(Container*)>;

  Container(boost::asio::io_context& io, const RuntimeOptions& options, FunctionSnapshot function,
            std::string id, UniqueFd client, DoneCallback on_done);
  ~Container();

  // Writes the bundle and starts the runtime. Failures end in cleanup, then on_done.
  void Start();
  // Kills the container now (shutdown, drain timeout). Cleanup follows as usual.
  void Kill(const char* why);

  const std::string& id() const { return id_; }
  const std::string& function_name() const { return function_.name; }
  State state() const { return state_; }

 private:
  void Fail(const std::string& why);
  void WaitForConnect();
  void OnControlReadable();
  void WaitForExit();
  void OnExited();
  void StartTimer(std::chrono::milliseconds after, const char* what);
  void OnTimeout(const char* what);
  void ReadOutput();
  void LogOutput(bool flush);
  void Cleanup();
  void RemoveCgroups();
  void DeleteRuntimeState();
  void Finish();
  std::string BundleDir() const { return options_.bundles_dir + "/" + id_; }

  const RuntimeOptions& options_;
  FunctionSnapshot function_;
  std::string id_;
  UniqueFd client_;
  DoneCallback on_done_;
  State state_ = State::kNew;
  bool bundle_created_ = false;
  bool killed_ = false;
  std::string outcome_;
  std::chrono::steady_clock::time_point started_;

  UniqueFd control_listener_;
  boost::asio::posix::stream_descriptor control_wait_;
  runtime::Child runc_;
  boost::asio::posix::stream_descriptor exit_wait_;
  runtime::Child helper_;  // runc kill / runc delete
  boost::asio::posix::stream_descriptor helper_wait_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer kill_timer_;
  // The runtime's and the handler's stdout and stderr, logged line by line up to a cap.
  boost::asio::posix::stream_descriptor output_;
  std::array<char, 4096> output_buffer_{};
  std::string output_line_;
  size_t output_logged_ = 0;
  bool output_truncated_ = false;
  static constexpr size_t kMaxOutputLogged = 16 << 10;
};

}  // namespace faas::server
