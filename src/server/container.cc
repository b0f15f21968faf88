#include "server/container.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

// The exit code as a shell reports it: 128+N for signal N.
int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

Container::Container(asio::io_context& io, runtime::Runtime& runtime, ContainerConfig config,
                     std::string id, std::string bundle_dir, Client client, Events events)
    : runtime_(runtime),
      config_(std::move(config)),
      id_(std::move(id)),
      bundle_dir_(std::move(bundle_dir)),
      client_(std::move(client)),
      request_open_(static_cast<bool>(client_)),
      events_(std::move(events)),
      uses_(client_ ? 1 : 0),
      started_(std::chrono::steady_clock::now()),
      attached_at_(started_),
      control_listener_(io),
      exit_wait_(io),
      helper_wait_(io),
      timer_(io),
      cgroup_retry_(io),
      stdout_(io, Stream::kStdout),
      stderr_(io, Stream::kStderr) {}

Container::~Container() {
  if (state_ == State::kCleaned || state_ == State::kNew) return;
  // Abandoned mid-flight (the loop is going away): clean up synchronously.
  spdlog::warn("container {}: destroyed in state {}, cleaning up", id_, StateName(state_));
  run_ = runtime::Child();
  if (auto del = runtime_.Delete(id_); del.ok()) (void)del->Wait();
  if (bundle_created_) (void)RemoveTree(bundle_dir_);
}

void Container::Start() {
  state_ = State::kSpawning;
  spdlog::debug("container {}: spawning for {}", id_, config_.function);
  if (auto st = Prepare(); !st.ok()) return Fail(st.error());
  phases_.prepared = std::chrono::steady_clock::now();
  if (auto st = Spawn(); !st.ok()) return Fail(st.error());
  phases_.spawned = std::chrono::steady_clock::now();
  if (config_.telemetry) config_.telemetry->OnContainerStarted(config_.function, !client_);
  state_ = State::kWaitingForConnect;
  spdlog::debug("container {}: waiting for connect (runtime pid {})", id_, run_.pid());
  WaitForExit();
  WaitForConnect();
  StartTimer(config_.connect_timeout, "connect");
}

// The bundle: its directory, the control socket the handler connects to, config.json.
Status Container::Prepare() {
  if (::mkdir(bundle_dir_.c_str(), 0700) != 0) return SysError(errno, "mkdir " + bundle_dir_);
  bundle_created_ = true;
  const uint32_t userns_base = config_.spec.userns_base;
  // In a user namespace the container's root is an unprivileged host user that must
  // reach the control socket in here; no other user may.
  if (userns_base != 0 && ::chown(bundle_dir_.c_str(), userns_base, userns_base) != 0)
    return SysError(errno, "chown " + bundle_dir_);
  runtime::ContainerSpec spec = config_.spec;
  spec.control_socket = bundle_dir_ + "/control.sock";
  spec.cgroups_path = runtime_.CgroupsPath(id_);
  static const uint64_t own_hard_limit = OwnHardFdLimit();  // fixed for faasd's life
  spec.nofile_limit = std::min(spec.nofile_limit, own_hard_limit);
  FAAS_ASSIGN_OR_RETURN(UniqueFd listener, ListenUnix(spec.control_socket));
  control_listener_.assign(listener.Release());
  return runtime::WriteBundle(bundle_dir_, spec);
}

// Starts the runtime with its stdout and stderr (and the handler's) on two pipes the
// loop reads.
Status Container::Spawn() {
  UniqueFd write_ends[2];
  for (OutputPipe* pipe : {&stdout_, &stderr_}) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return SysError(errno, "pipe");
    write_ends[pipe == &stderr_ ? 1 : 0] = UniqueFd(fds[1]);
    pipe->reader.assign(fds[0]);
    ReadOutput(*pipe);
  }
  FAAS_ASSIGN_OR_RETURN(run_,
                        runtime_.Run(id_, bundle_dir_, write_ends[0].get(), write_ends[1].get()));
  exit_wait_.assign(run_.TakeExitFd().Release());
  return Ok();
}

void Container::Fail(const Error& error) {
  spdlog::error("container {} ({}): {}", id_, config_.function, error.message);
  outcome_ = "failed: " + error.message;
  ending_ = Ending::kFailed;
  EndRequest(Outcome::kRuntimeError, client_ ? 500 : 0);
  if (client_) AnswerClient(client_.fd.get(), 500, "Internal Server Error");
  Cleanup();
}

void Container::WaitForConnect() {
  control_listener_.async_wait(asio::posix::stream_descriptor::wait_read,
                               [self = shared_from_this()](boost::system::error_code ec) {
                                 if (!ec) self->OnControlReadable();
                               });
}

void Container::OnControlReadable() {
  const bool next = state_ == State::kHanded;  // a reused handler asking for its next client
  if (state_ != State::kWaitingForConnect && !next) return;
  UniqueFd conn(::accept4(control_listener_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) {
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return WaitForConnect();
    return Kill("accept on control socket failed");
  }
  if (auto from = CheckPeer(conn.get()); !from.ok()) {
    if (from.error().code != Errc::kInvalidArgument) return Kill("cannot check the control peer");
    spdlog::warn("container {} ({}): refused a control connection: {}", id_, config_.function,
                 from.error().message);
    return WaitForConnect();
  }
  control_conn_ = std::move(conn);
  timer_.cancel();
  if (next) {
    spdlog::info("request {} {}: served ({} of {}) in {} ms", config_.function, id_, uses_,
                 config_.spec.reuse, MillisSince(attached_at_));
    EndRequest(Outcome::kOk, 0);
    state_ = State::kReady;
    if (events_.idle) events_.idle(this);
    return;
  }
  phases_.connected = std::chrono::steady_clock::now();
  if (config_.spec.reuse <= 1) CloseControlListener();  // a second connect is refused
  if (client_) {
    if (!HandOver()) {
      EndRequest(Outcome::kRuntimeError, 502);
      AnswerClient(client_.fd.get(), 502, "Bad Gateway");
      Kill("hand-over failed");
    }
    return;
  }
  state_ = State::kReady;
  spdlog::debug("container {}: ready", id_);
  // A copy: the callback may give the container other events (SetEvents).
  if (auto ready = events_.ready) ready(this);
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
  const uint32_t base = config_.spec.userns_base;
  if (base != 0 && (peer.uid < base || peer.uid - base >= runtime::kUsernsSize))
    return MakeError(Errc::kInvalidArgument, "pid " + std::to_string(peer.pid) + " uid " +
                                                 std::to_string(peer.uid) +
                                                 " is outside the container's user namespace");
  return runtime_.CheckMember(id_, peer.pid);
}

void Container::CloseControlListener() { control_listener_.close(); }

bool Container::Attach(Client& client) {
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
  request_open_ = true;
  start_ = waiting ? StartKind::kCold : StartKind::kWarm;
  return true;
}

bool Container::HandOver() {
  if (auto st = runtime::SendFd(control_conn_.get(), client_.fd.get(), runtime::kSocketPayload);
      !st.ok()) {
    spdlog::warn("container {}: handing over the client failed: {}", id_, st.error().message);
    return false;
  }
  phases_.handed = std::chrono::steady_clock::now();
  client_.fd.Reset();
  control_conn_.Reset();
  state_ = State::kHanded;
  if (config_.spec.reuse > 1) {
    spdlog::debug("container {}: handed the client over ({} of {})", id_, uses_,
                  config_.spec.reuse);
  } else {
    spdlog::debug("container {}: handed the client over", id_);
  }
  if (uses_ < config_.spec.reuse) {
    WaitForConnect();  // the handler may come back for another
  } else {
    CloseControlListener();
  }
  StartTimer(std::chrono::milliseconds(config_.spec.run_timeout_ms), "run");
  return true;
}

void Container::WaitForExit() {
  exit_wait_.async_wait(asio::posix::stream_descriptor::wait_read,
                        [self = shared_from_this()](boost::system::error_code ec) {
                          if (!ec) self->OnExited();
                        });
}

void Container::OnExited() {
  auto status = run_.TryReap();
  if (!status.ok()) return Fail(status.error());
  if (*status < 0) return WaitForExit();
  exit_wait_.close();
  phases_.exited = std::chrono::steady_clock::now();
  if (outcome_.empty()) outcome_ = runtime::DescribeWaitStatus(*status);
  if (ending_ == Ending::kNone) ending_ = Ending::kExited;
  const int exit_code = ExitCode(*status);
  if ((state_ == State::kWaitingForConnect || state_ == State::kReady) && !killed_) {
    // Whatever wrote to the pipes is gone: their last lines say why (the runtime's
    // own error, or what the handler said before it exited).
    DrainOutput(stdout_);
    DrainOutput(stderr_);
    const std::string said = OutputSummary(kWarningLines);
    spdlog::warn("container {} ({}): runtime {} before the handler {}{}{}", id_, config_.function,
                 outcome_, state_ == State::kReady ? "got a client" : "connected",
                 said.empty() ? "" : "; last output: ", said);
    if (client_) {
      EndRequest(Outcome::kHandlerError, 502, exit_code);
      AnswerClient(client_.fd.get(), 502, "Bad Gateway");
    }
  }
  if (ending_ == Ending::kRunTimeout) {
    EndRequest(Outcome::kTimeout, 0, exit_code);
  } else if (killed_) {
    EndRequest(Outcome::kRuntimeError, 0, exit_code);
  } else {
    EndRequest(exit_code == 0 ? Outcome::kOk : Outcome::kHandlerError, 0, exit_code);
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
    spdlog::warn("container {} ({}): handler did not connect within {} ms", id_, config_.function,
                 config_.connect_timeout.count());
    outcome_ = "connect timeout";
    ending_ = Ending::kConnectTimeout;
    if (client_) {
      EndRequest(Outcome::kTimeout, 504);
      AnswerClient(client_.fd.get(), 504, "Gateway Timeout");
    }
  } else {
    spdlog::warn("container {} ({}): handler still running after {} ms", id_, config_.function,
                 config_.spec.run_timeout_ms);
    outcome_ = std::string(what) + " timeout";
    ending_ = Ending::kRunTimeout;
  }
  Kill(what);
}

void Container::Kill(const char* why) {
  if (killed_ || state_ >= State::kExited) return;
  killed_ = true;
  if (outcome_.empty()) outcome_ = std::string("killed: ") + why;
  if (ending_ == Ending::kNone) ending_ = Ending::kKilled;
  spdlog::debug("container {}: killing ({})", id_, why);
  // Killing the runtime's `run` leaves the container's processes; its `delete`
  // in the cleanup that follows the exit kills them and removes the cgroup.
  if (run_.running()) {
    (void)run_.Signal(SIGKILL);
  } else {
    Cleanup();
  }
}

void Container::ReadOutput(OutputPipe& pipe) {
  pipe.reader.async_read_some(
      asio::buffer(pipe.buffer),
      [self = shared_from_this(), &pipe](boost::system::error_code ec, size_t n) {
        if (ec) return self->Flush(pipe);
        self->Feed(pipe, std::string_view(pipe.buffer.data(), n));
        self->ReadOutput(pipe);
      });
}

// Splits what a pipe gave into lines; a line longer than kMaxLine is reported cut,
// and the rest of it is dropped.
void Container::Feed(OutputPipe& pipe, std::string_view data) {
  while (!data.empty()) {
    const size_t newline = data.find('\n');
    const std::string_view part = data.substr(0, newline);
    if (!pipe.skipping) {
      const size_t room = kMaxLine - pipe.line.size();
      pipe.line.append(part.substr(0, room));
      if (part.size() > room) {
        EmitLine(pipe, /*cut=*/true);
        pipe.skipping = true;
      }
    }
    if (newline == std::string_view::npos) return;
    if (!pipe.skipping) EmitLine(pipe, /*cut=*/false);
    pipe.skipping = false;
    data.remove_prefix(newline + 1);
  }
}

// The end of a pipe: a last line without its newline is still a line.
void Container::Flush(OutputPipe& pipe) {
  if (!pipe.skipping && !pipe.line.empty()) EmitLine(pipe, /*cut=*/false);
  pipe.skipping = false;
}

void Container::EmitLine(OutputPipe& pipe, bool cut) {
  if (config_.telemetry) {
    config_.telemetry->OnOutput({.function = config_.function,
                                 .version = config_.version,
                                 .container = id_,
                                 .stream = pipe.stream,
                                 .time = std::chrono::system_clock::now(),
                                 .text = pipe.line,
                                 .cut = cut});
  }
  if (output_tail_.size() == kTailLines) output_tail_.pop_front();
  output_tail_.push_back(std::move(pipe.line));
  pipe.line.clear();
}

std::string Container::OutputSummary(size_t lines) const {
  constexpr size_t kMaxLineBytes = 256;
  std::string summary;
  const size_t skip = output_tail_.size() > lines ? output_tail_.size() - lines : 0;
  for (size_t i = skip; i < output_tail_.size(); ++i)
    summary += (summary.empty() ? "" : " | ") + output_tail_[i].substr(0, kMaxLineBytes);
  return summary;
}

// Everything that wrote to the pipe is gone: reads what is left in it, then closes it.
void Container::DrainOutput(OutputPipe& pipe) {
  if (!pipe.reader.is_open()) return;
  for (ssize_t n;
       (n = ::read(pipe.reader.native_handle(), pipe.buffer.data(), pipe.buffer.size())) > 0;)
    Feed(pipe, std::string_view(pipe.buffer.data(), static_cast<size_t>(n)));
  Flush(pipe);
  boost::system::error_code ignored;
  pipe.reader.close(ignored);
}

// Reports the request of the client this container serves, once.
void Container::EndRequest(Outcome outcome, int answered, std::optional<int> exit_status) {
  if (!request_open_) return;
  request_open_ = false;
  if (!config_.telemetry) return;
  config_.telemetry->OnRequest({.function = config_.function,
                                .version = config_.version,
                                .client = client_.peer,
                                .container = id_,
                                .start = start_,
                                .outcome = outcome,
                                .accepted = client_.accepted_wall,
                                .queue_wait = client_.queue_wait,
                                .duration = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::steady_clock::now() - client_.accepted),
                                .exit_status = exit_status,
                                .answered = answered});
}

void Container::Cleanup() {
  if (state_ == State::kCleaning || state_ == State::kCleaned) return;
  state_ = State::kCleaning;
  timer_.cancel();
  CloseControlListener();
  control_conn_.Reset();
  EndRequest(Outcome::kRuntimeError, 0);
  client_.fd.Reset();
  if (run_.running()) {
    // Reached only from Fail() after the spawn: stop the runtime first.
    killed_ = true;
    (void)run_.Signal(SIGKILL);
    (void)run_.Wait();
    exit_wait_.close();
  }
  DeleteRuntimeState();
}

void Container::DeleteRuntimeState() {
  if (!runtime_.HasState(id_)) return Finish();
  auto del = runtime_.Delete(id_);
  if (!del.ok()) {
    if (OutOfResources(del.error())) return RetryLater([this] { DeleteRuntimeState(); });
    spdlog::error("container {}: {}", id_, del.error().message);
    return Finish();
  }
  helper_ = std::move(del).value();
  helper_wait_.assign(helper_.TakeExitFd().Release());
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
  // A runtime killed while it was still creating the container leaves its cgroup
  // (with `init` maybe still in it, dying) to its `delete`, which may miss it; one
  // that failed on its own (short of fds, say) may leave some of its cgroups too.
  // Removing cgroups that are gone costs a failed rmdir each.
  if (!runtime_.RemoveCgroups(id_)) {
    if (++cgroup_attempts_ < kCgroupAttempts) {
      cgroup_retry_.expires_after(std::chrono::milliseconds(20));
      cgroup_retry_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->Finish();
      });
      return;
    }
    spdlog::error("container {}: its cgroup {} stays busy; left behind", id_,
                  runtime_.CgroupsPath(id_));
  }
  DrainOutput(stdout_);
  DrainOutput(stderr_);
  RemoveBundle();
}

void Container::RemoveBundle() {
  if (bundle_created_) {
    if (auto st = RemoveTree(bundle_dir_); !st.ok()) {
      if (OutOfResources(st.error())) return RetryLater([this] { RemoveBundle(); });
      spdlog::error("container {}: {}", id_, st.error().message);
    }
    bundle_created_ = false;
  }
  state_ = State::kCleaned;
  const long ms = MillisSince(attached_at_);
  LogPhases();
  if (uses_ > 0) {
    spdlog::info("request {} {}: {} in {} ms", config_.function, id_, outcome_, ms);
  } else {
    spdlog::debug("container {} ({}): stopped unused after {} ms: {}", id_, config_.function, ms,
                  outcome_);
  }
  auto done = std::move(events_.done);
  if (done) done(this);
}

}  // namespace faas::server
