#include "runtime/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

extern char** environ;

namespace faas::runtime {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// faasd's environment without what its service manager gave faasd alone: runc would
// proxy its containers' READY=1 to systemd through NOTIFY_SOCKET.
std::vector<char*> ChildEnvironment() {
  std::vector<char*> env;
  for (char** var = environ; *var != nullptr; ++var) {
    const std::string_view entry(*var);
    if (entry.starts_with("NOTIFY_SOCKET=") || entry.starts_with("WATCHDOG_USEC=") ||
        entry.starts_with("WATCHDOG_PID="))
      continue;
    env.push_back(*var);
  }
  env.push_back(nullptr);
  return env;
}

}  // namespace

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
  }
  return *this;
}

Child::~Child() { KillAndReap(); }

void Child::KillAndReap() {
  if (pid_ <= 0) return;
  if (pidfd_) {
    PidfdSendSignal(pidfd_.get(), SIGKILL);
  } else {
    ::kill(pid_, SIGKILL);
  }
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  pidfd_.Reset();
}

Result<int> Child::TryReap() {
  if (pid_ <= 0) return MakeError(Errc::kInternal, "no child to reap");
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return SysError(errno, "waitpid", Errc::kInternal);
  if (r == 0) return -1;
  pid_ = -1;
  pidfd_.Reset();
  return status;
}

Result<int> Child::Wait() {
  if (pid_ <= 0) return MakeError(Errc::kInternal, "no child to wait for");
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return SysError(errno, "waitpid", Errc::kInternal);
  pid_ = -1;
  pidfd_.Reset();
  return status;
}

Status Child::Signal(int sig) {
  if (pid_ <= 0) return Ok();
  if (!pidfd_) {
    if (::kill(pid_, sig) != 0 && errno != ESRCH) return SysError(errno, "kill");
    return Ok();
  }
  if (PidfdSendSignal(pidfd_.get(), sig) != 0 && errno != ESRCH)
    return SysError(errno, "pidfd_send_signal");
  return Ok();
}

Result<Child> Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return MakeError(Errc::kInvalidArgument, "spawn: empty argv");
  std::vector<char*> argv;
  for (const auto& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, options.stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  if (options.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, options.stdout_fd, 1);
  if (options.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&actions, options.stderr_fd, 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> env = ChildEnvironment();
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return SysError(rc, "spawn " + options.argv[0], Errc::kInternal);

  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return SysError(err, "pidfd_open", Errc::kInternal);
  }
  return Child(pid, std::move(pidfd));
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

Result<std::string> ReadUntil(int fd, size_t max_bytes,
                              std::optional<std::chrono::steady_clock::time_point> deadline) {
  std::string out;
  char buf[4096];
  while (out.size() < max_bytes) {
    int wait_ms = -1;
    if (deadline) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline -
                                                               std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      wait_ms = static_cast<int>(left.count());
    }
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return SysError(errno, "poll");
    if (ready == 0) break;
    ssize_t n = ::read(fd, buf, std::min(sizeof buf, max_bytes - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError(errno, "read");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<Captured> Capture(const std::vector<std::string>& argv, size_t max_bytes,
                         std::optional<std::chrono::steady_clock::time_point> deadline,
                         bool with_stderr) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return SysError(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  FAAS_ASSIGN_OR_RETURN(Child child,
                        Spawn({argv, -1, write_end.get(), with_stderr ? write_end.get() : -1}));
  write_end.Reset();
  FAAS_ASSIGN_OR_RETURN(std::string out, ReadUntil(read_end.get(), max_bytes, deadline));
  return Captured{std::move(child), std::move(out)};
}

}  // namespace faas::runtime
