#include "server/request.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/file.h"
#include "common/log.h"
#include "runtime/fd_passing.h"
#include "server/reject.h"

namespace faas::server {
namespace {

namespace asio = boost::asio;

const char* StateName(Container::State state) {
  switch (state) {
    case Container::State::kNew:
      return "new";
    case Container::State::kSpawning:
      return "spawning";
    case Container::State::kWaitingForConnect:
      return "waiting-for-connect";
    case Container::State::kReady:
      return "ready";
    case Container::State::kHanded:
      return "handed";
    case Container::State::kExited:
      return "exited";
    case Container::State::kCleaning:
      return "cleaning";
    case Container::State::kCleaned:
      return "cleaned";
  }
  return "?";
}

int DupCloexec(int fd) { return ::fcntl(fd, F_DUPFD_CLOEXEC, 0); }

long MillisSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t)
      .count();
}

// The runtime cannot give a container more fds than faasd may have itself.
uint64_t OwnHardFdLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_max == RLIM_INFINITY) return UINT64_MAX;
  return limit.rlim_max;
}

Result<UniqueFd> ListenUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return MakeError(Errc::kInternal, "control socket path too long: " + path);
  path.copy(addr.sun_path, path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return SysError(errno, "socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return SysError(errno, "bind " + path);
  // Its directory keeps everyone but root and the container's root out; inside, the
  // handler may run as any user of the image.
  ::chmod(path.c_str(), 0666);
  if (::listen(fd.get(), 1) != 0) return SysError(errno, "listen " + path);
  return fd;
}

// Best effort: the container never took the connection, so faasd answers it itself.
void AnswerClient(int fd, int status, const char* reason) {
  char discard[4096];
  while (::recv(fd, discard, sizeof discard, MSG_DONTWAIT) > 0) {
  }
  const std::string response = PlainResponse(status, reason);
  (void)::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
}

}  // namespace

Container::Container(asio::io_context& io, const RuntimeOptions& options, FunctionSnapshot function,
                     std::string id, UniqueFd client, Callback on_done, Callback on_idle)
    : options_(options),
      function_(std::move(function)),
      id_(std::move(id)),
      client_(std::move(client)),
      on_done_(std::move(on_done)),
      on_idle_(std::move(on_idle)),
      uses_(client_ ? 1 : 0),
      started_(std::chrono::steady_clock::now()),
      attached_at_(started_),
      control_wait_(io),
      exit_wait_(io),
      helper_wait_(io),
      timer_(io),
      cgroup_retry_(io),
      output_(io) {}

Container::~Container() {
  if (state_ == State::kCleaned || state_ == State::kNew) return;
  // Abandoned mid-flight (the loop is going away): clean up synchronously.
  spdlog::warn("container {}: destroyed in state {}, cleaning up", id_, StateName(state_));
  runc_ = runtime::Child();
  auto del = runtime::Spawn(
      {{options_.runtime, "--root", options_.runtime_root, "delete", "--force", id_}});
  if (del.ok()) (void)del->Wait();
  if (bundle_created_) (void)RemoveTree(BundleDir());
}

void Container::Start() {
  state_ = State::kSpawning;
  spdlog::debug("container {}: spawning for {}", id_, function_.name);
  std::string dir = BundleDir();
  if (::mkdir(dir.c_str(), 0700) != 0) return Fail("mkdir " + dir + ": " + std::strerror(errno));
  bundle_created_ = true;
  // In a user namespace the container's root is an unprivileged host user that must
  // reach the control socket in here; no other user may.
  if (function_.userns_base != 0 &&
      ::chown(dir.c_str(), function_.userns_base, function_.userns_base) != 0)
    return Fail("chown " + dir + ": " + std::strerror(errno));
  auto listener = ListenUnix(dir + "/control.sock");
  if (!listener.ok()) return Fail(listener.error().message);
  control_listener_ = std::move(listener).value();

  runtime::ContainerSpec spec;
  spec.rootfs = function_.rootfs->path();
  spec.args = function_.cmd;
  spec.env = function_.env;
  spec.cwd = function_.working_dir;
  spec.control_socket = dir + "/control.sock";
  spec.cgroups_path = options_.cgroup_parent + "/" + id_;
  spec.uid = function_.uid;
  spec.gid = function_.gid;
  spec.memory_bytes = function_.limits.memory_bytes;
  spec.cpu_quota_us = function_.limits.cpu_millis * 100;
  spec.pids_limit = function_.limits.pids;
  spec.run_timeout_ms = function_.limits.timeout_ms;
  spec.userns_base = function_.userns_base;
  spec.reuse = function_.reuse;
  static const uint64_t own_hard_limit = OwnHardFdLimit();  // fixed for faasd's life
  spec.nofile_limit = std::min(spec.nofile_limit, own_hard_limit);
  if (auto st = runtime::WriteBundle(dir, spec); !st.ok()) return Fail(st.error().message);
  phases_.prepared = std::chrono::steady_clock::now();

  int out[2];
  if (::pipe2(out, O_CLOEXEC | O_NONBLOCK) != 0)
    return Fail(std::string("pipe: ") + std::strerror(errno));
  UniqueFd out_write(out[1]);
  output_.assign(out[0]);
  auto child = runtime::Spawn(
      {{options_.runtime, "--root", options_.runtime_root, "run", "--bundle", dir, id_},
       -1,
       out_write.get(),
       out_write.get()});
  out_write.Reset();
  if (!child.ok()) return Fail(child.error().message);
  phases_.spawned = std::chrono::steady_clock::now();
  ReadOutput();
  runc_ = std::move(child).value();
  UniqueFd exit_fd(DupCloexec(runc_.pidfd()));
  UniqueFd control_fd(DupCloexec(control_listener_.get()));
  if (!exit_fd || !control_fd) return Fail(std::string("dup: ") + std::strerror(errno));
  exit_wait_.assign(exit_fd.Release());
  control_wait_.assign(control_fd.Release());
  state_ = State::kWaitingForConnect;
  spdlog::debug("container {}: waiting for connect (runc pid {})", id_, runc_.pid());
  WaitForExit();
  WaitForConnect();
  StartTimer(std::chrono::milliseconds(function_.limits.connect_timeout_ms), "connect");
}

void Container::Fail(const std::string& why) {
  spdlog::error("container {} ({}): {}", id_, function_.name, why);
  outcome_ = "failed: " + why;
  if (client_) AnswerClient(client_.get(), 500, "Internal Server Error");
  Cleanup();
}

void Container::WaitForConnect() {
  control_wait_.async_wait(asio::posix::stream_descriptor::wait_read,
                           [self = shared_from_this()](boost::system::error_code ec) {
                             if (!ec) self->OnControlReadable();
                           });
}

void Container::OnControlReadable() {
  const bool next = state_ == State::kHanded;  // a reused handler asking for its next client
  if (state_ != State::kWaitingForConnect && !next) return;
  UniqueFd conn(::accept4(control_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) {
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return WaitForConnect();
    return Kill("accept on control socket failed");
  }
  if (auto from = CheckPeer(conn.get()); !from.ok()) {
    if (from.error().code != Errc::kInvalidArgument) return Kill("cannot check the control peer");
    spdlog::warn("container {} ({}): refused a control connection: {}", id_, function_.name,
                 from.error().message);
    return WaitForConnect();
  }
  control_conn_ = std::move(conn);
  timer_.cancel();
  if (next) {
    spdlog::info("request {} {}: served ({} of {}) in {} ms", function_.name, id_, uses_,
                 function_.reuse, MillisSince(attached_at_));
    state_ = State::kReady;
    if (on_idle_) on_idle_(this);
    return;
  }
  phases_.connected = std::chrono::steady_clock::now();
  if (function_.reuse <= 1) CloseControlListener();  // a second connect is refused
  if (client_) {
    if (!HandOver()) {
      AnswerClient(client_.get(), 502, "Bad Gateway");
      Kill("hand-over failed");
    }
    return;
  }
  state_ = State::kReady;
  spdlog::debug("container {}: ready", id_);
}

// Only a process of this container may take its clients (kInvalidArgument: a
// stranger; other errors: the check itself failed): the peer must be in the
// container's cgroup (and, in a user namespace, run as one of its mapped ids). The
// socket's directory already keeps other users out; this also stops root's other
// processes and a connection made through a leaked path.
Status Container::CheckPeer(int conn) const {
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
    return SysError(errno, "SO_PEERCRED");
  const std::string who = "pid " + std::to_string(peer.pid) + " uid " + std::to_string(peer.uid);
  if (function_.userns_base != 0 && (peer.uid < function_.userns_base ||
                                     peer.uid - function_.userns_base >= runtime::kUsernsSize))
    return MakeError(Errc::kInvalidArgument, who + " is outside the container's user namespace");
  auto cgroups = ReadFile("/proc/" + std::to_string(peer.pid) + "/cgroup", 64 << 10);
  if (!cgroups.ok()) {
    if (cgroups.error().sys_errno == ENOENT)
      return MakeError(Errc::kInvalidArgument, who + " is gone");
    return std::move(cgroups).error();
  }
  const std::string mine = options_.cgroup_parent + "/" + id_;
  std::istringstream lines(*cgroups);
  for (std::string line; std::getline(lines, line);) {
    // hierarchy-id:controllers:path
    auto colon = line.find(':', line.find(':') + 1);
    if (colon == std::string::npos) continue;
    std::string_view path = std::string_view(line).substr(colon + 1);
    if (path == mine || (path.size() > mine.size() && path.substr(0, mine.size()) == mine &&
                         path[mine.size()] == '/'))
      return Ok();
  }
  return MakeError(Errc::kInvalidArgument, who + " is not in the container's cgroup " + mine);
}

void Container::CloseControlListener() {
  control_wait_.close();
  control_listener_.Reset();
}

bool Container::Attach(UniqueFd& client) {
  const bool waiting = state_ == State::kWaitingForConnect && !client_ && uses_ == 0;
  if (killed_ || (!waiting && state_ != State::kReady)) return false;
  client_ = std::move(client);
  ++uses_;
  attached_at_ = std::chrono::steady_clock::now();
  if (state_ == State::kReady && !HandOver()) {
    client = std::move(client_);
    --uses_;
    Kill("hand-over failed");
    return false;
  }
  return true;
}

bool Container::HandOver() {
  if (auto st = runtime::SendFd(control_conn_.get(), client_.get(), runtime::kSocketPayload);
      !st.ok()) {
    spdlog::warn("container {}: handing over the client failed: {}", id_, st.error().message);
    return false;
  }
  phases_.handed = std::chrono::steady_clock::now();
  client_.Reset();
  control_conn_.Reset();
  state_ = State::kHanded;
  if (function_.reuse > 1) {
    spdlog::debug("container {}: handed the client over ({} of {})", id_, uses_, function_.reuse);
  } else {
    spdlog::debug("container {}: handed the client over", id_);
  }
  if (uses_ < function_.reuse) {
    WaitForConnect();  // the handler may come back for another
  } else {
    CloseControlListener();
  }
  StartTimer(std::chrono::milliseconds(function_.limits.timeout_ms), "run");
  return true;
}

void Container::WaitForExit() {
  exit_wait_.async_wait(asio::posix::stream_descriptor::wait_read,
                        [self = shared_from_this()](boost::system::error_code ec) {
                          if (!ec) self->OnExited();
                        });
}

void Container::OnExited() {
  auto status = runc_.TryReap();
  if (!status.ok()) return Fail(status.error().message);
  if (*status < 0) return WaitForExit();
  exit_wait_.close();
  phases_.exited = std::chrono::steady_clock::now();
  if (outcome_.empty()) outcome_ = runtime::DescribeWaitStatus(*status);
  if ((state_ == State::kWaitingForConnect || state_ == State::kReady) && !killed_) {
    spdlog::warn("container {} ({}): runtime {} before the handler {}", id_, function_.name,
                 outcome_, state_ == State::kReady ? "got a client" : "connected");
    if (client_) AnswerClient(client_.get(), 502, "Bad Gateway");
  }
  state_ = State::kExited;
  Cleanup();
}

void Container::StartTimer(std::chrono::milliseconds after, const char* what) {
  timer_.expires_after(after);
  timer_.async_wait([self = shared_from_this(), what](boost::system::error_code ec) {
    if (!ec) self->OnTimeout(what);
  });
}

void Container::OnTimeout(const char* what) {
  if (state_ == State::kWaitingForConnect) {
    spdlog::warn("container {} ({}): handler did not connect within {} ms", id_, function_.name,
                 function_.limits.connect_timeout_ms);
    outcome_ = "connect timeout";
    if (client_) AnswerClient(client_.get(), 504, "Gateway Timeout");
  } else {
    spdlog::warn("container {} ({}): handler still running after {} ms", id_, function_.name,
                 function_.limits.timeout_ms);
    outcome_ = std::string(what) + " timeout";
  }
  Kill(what);
}

void Container::Kill(const char* why) {
  if (killed_ || state_ >= State::kExited) return;
  killed_ = true;
  if (outcome_.empty()) outcome_ = std::string("killed: ") + why;
  spdlog::debug("container {}: killing ({})", id_, why);
  // Killing `runc run` leaves the container's processes; `runc delete --force`
  // in the cleanup that follows the exit kills them and removes the cgroup.
  if (runc_.running()) {
    (void)runc_.Signal(SIGKILL);
  } else {
    Cleanup();
  }
}

void Container::ReadOutput() {
  output_.async_read_some(
      asio::buffer(output_buffer_),
      [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (ec) return self->LogOutput(/*flush=*/true);
        if (self->output_logged_ < kMaxOutputLogged) {
          self->output_line_.append(self->output_buffer_.data(), n);
          self->LogOutput(/*flush=*/false);
        }
        self->ReadOutput();  // past the cap: keep draining so the handler never blocks
      });
}

void Container::LogOutput(bool flush) {
  size_t start = 0;
  for (size_t nl; (nl = output_line_.find('\n', start)) != std::string::npos; start = nl + 1) {
    spdlog::info("{} {} | {}", function_.name, id_, output_line_.substr(start, nl - start));
    output_logged_ += nl - start + 1;
  }
  output_line_.erase(0, start);
  if (output_line_.size() > 1024 || (flush && !output_line_.empty())) {
    spdlog::info("{} {} | {}", function_.name, id_, output_line_);
    output_logged_ += output_line_.size();
    output_line_.clear();
  }
  if (output_logged_ >= kMaxOutputLogged && !output_truncated_) {
    output_truncated_ = true;
    spdlog::warn("{} {}: output beyond {} bytes is not logged", function_.name, id_,
                 kMaxOutputLogged);
  }
}

void Container::Cleanup() {
  if (state_ == State::kCleaning || state_ == State::kCleaned) return;
  state_ = State::kCleaning;
  timer_.cancel();
  CloseControlListener();
  control_conn_.Reset();
  client_.Reset();
  if (runc_.running()) {
    // Reached only from Fail() after the spawn: stop the runtime first.
    killed_ = true;
    (void)runc_.Signal(SIGKILL);
    (void)runc_.Wait();
    exit_wait_.close();
  }
  DeleteRuntimeState();
}

void Container::DeleteRuntimeState() {
  struct stat st;
  std::string state_dir = options_.runtime_root + "/" + id_;
  if (::stat(state_dir.c_str(), &st) != 0) return Finish();
  auto del = runtime::Spawn(
      {{options_.runtime, "--root", options_.runtime_root, "delete", "--force", id_}});
  if (!del.ok()) {
    if (OutOfResources(del.error())) return RetryLater([this] { DeleteRuntimeState(); });
    spdlog::error("container {}: {}", id_, del.error().message);
    return Finish();
  }
  helper_ = std::move(del).value();
  UniqueFd wait_fd(DupCloexec(helper_.pidfd()));
  if (!wait_fd) {
    // Out of fds: wait for it here (it takes milliseconds) rather than leak it.
    (void)helper_.Wait();
    return Finish();
  }
  helper_wait_.assign(wait_fd.Release());
  helper_wait_.async_wait(asio::posix::stream_descriptor::wait_read,
                          [self = shared_from_this()](boost::system::error_code ec) {
                            if (ec) return;
                            auto status = self->helper_.Wait();
                            self->helper_wait_.close();
                            if (status.ok() && *status != 0)
                              spdlog::warn("container {}: runtime delete: {}", self->id_,
                                           runtime::DescribeWaitStatus(*status));
                            self->Finish();
                          });
}

bool Container::OutOfResources(const Error& error) {
  return error.sys_errno == EMFILE || error.sys_errno == ENFILE || error.sys_errno == ENOMEM ||
         error.sys_errno == EAGAIN;
}

// A cleanup step that failed for want of fds or memory is tried again until it
// succeeds: those come back as clients and containers go, and a container must not
// leave its runtime state or bundle behind because it ended in a bad moment.
void Container::RetryLater(std::function<void()> step) {
  if (retry_delay_.count() == 0) {
    spdlog::warn("container {}: cleanup is short of fds or memory; retrying", id_);
    retry_delay_ = std::chrono::milliseconds(50);
  } else {
    retry_delay_ = std::min(retry_delay_ * 2, std::chrono::milliseconds(1000));
  }
  cgroup_retry_.expires_after(retry_delay_);
  cgroup_retry_.async_wait(
      [self = shared_from_this(), step = std::move(step)](boost::system::error_code ec) {
        if (!ec) step();
      });
}

// `runc delete` leaves the cgroup when runc was killed while it was still creating
// the container (the cgroup exists, its state file not yet), and `runc init` may
// still be in it, dying: kill what is left, then remove the cgroup, for cgroup v2
// and for every v1 hierarchy. False while one is still busy. ENOENT is the usual,
// clean case.
bool Container::RemoveCgroups() {
  const std::string leaf = options_.cgroup_parent + "/" + id_;
  std::vector<std::string> dirs = {"/sys/fs/cgroup" + leaf};
  std::error_code ec;
  for (const auto& hierarchy : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    if (hierarchy.is_directory(ec) && !hierarchy.is_symlink(ec))
      dirs.push_back(hierarchy.path().string() + leaf);
  }
  bool all_gone = true;
  for (const auto& dir : dirs) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT || errno == ENOTDIR) continue;
    all_gone = false;
    if (auto procs = ReadFile(dir + "/cgroup.procs", 1 << 20); procs.ok()) {
      std::istringstream pids(*procs);
      for (pid_t pid; pids >> pid;) ::kill(pid, SIGKILL);
    }
  }
  return all_gone;
}

// Microseconds from the start to each step (-1: not reached); cleanup ends now.
void Container::LogPhases() const {
  if (!spdlog::should_log(spdlog::level::debug)) return;
  auto since_start = [this](std::chrono::steady_clock::time_point t) -> long {
    if (t == std::chrono::steady_clock::time_point{}) return -1;
    return std::chrono::duration_cast<std::chrono::microseconds>(t - started_).count();
  };
  spdlog::debug(
      "container {}: phases us: prepared {} spawned {} connected {} attached {} handed {} "
      "exited {} cleaned {}",
      id_, since_start(phases_.prepared), since_start(phases_.spawned),
      since_start(phases_.connected), since_start(attached_at_), since_start(phases_.handed),
      since_start(phases_.exited), since_start(std::chrono::steady_clock::now()));
}

void Container::Finish() {
  constexpr int kCgroupAttempts = 50;  // 20 ms apart
  if (killed_ && !RemoveCgroups()) {
    if (++cgroup_attempts_ < kCgroupAttempts) {
      cgroup_retry_.expires_after(std::chrono::milliseconds(20));
      cgroup_retry_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->Finish();
      });
      return;
    }
    spdlog::error("container {}: its cgroup {}/{} stays busy; left behind", id_,
                  options_.cgroup_parent, id_);
  }
  // Everything that wrote to the pipe is gone by now: log what is left in it.
  for (ssize_t n;
       output_.is_open() && output_logged_ < kMaxOutputLogged &&
       (n = ::read(output_.native_handle(), output_buffer_.data(), output_buffer_.size())) > 0;) {
    output_line_.append(output_buffer_.data(), static_cast<size_t>(n));
    LogOutput(/*flush=*/false);
  }
  LogOutput(/*flush=*/true);
  output_.close();
  RemoveBundle();
}

void Container::RemoveBundle() {
  if (bundle_created_) {
    if (auto st = RemoveTree(BundleDir()); !st.ok()) {
      if (OutOfResources(st.error())) return RetryLater([this] { RemoveBundle(); });
      spdlog::error("container {}: {}", id_, st.error().message);
    }
    bundle_created_ = false;
  }
  state_ = State::kCleaned;
  const long ms = MillisSince(attached_at_);
  LogPhases();
  if (uses_ > 0) {
    spdlog::info("request {} {}: {} in {} ms", function_.name, id_, outcome_, ms);
  } else {
    spdlog::debug("container {} ({}): stopped unused after {} ms: {}", id_, function_.name, ms,
                  outcome_);
  }
  auto done = std::move(on_done_);
  if (done) done(this);
}

}  // namespace faas::server
