// Child processes started without a shell, supervised through a pidfd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace faas::runtime {

// Owns a child process. The destructor SIGKILLs and reaps a child that was not reaped yet,
// so a Child never outlives its owner as a zombie or an orphan.
class Child {
 public:
  Child() = default;
  Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();

  pid_t pid() const { return pid_; }
  // Readable once the child has exited: wait on it with an event loop, then TryReap().
  // -1 after TakeExitFd().
  int pidfd() const { return pidfd_.get(); }
  bool running() const { return pid_ > 0; }

  // Non-blocking: the wait status if the child has exited, nullopt-like -1 if not yet.
  // After a successful reap the Child is empty.
  Result<int> TryReap();
  // Blocking wait.
  Result<int> Wait();
  // Sends `sig` through the pidfd, or with kill() once the pidfd was taken: both are
  // safe against pid reuse, since the pid stays ours until this Child reaps it.
  Status Signal(int sig);
  // Moves the pidfd out, for an event loop that then owns it (and closes it). The
  // Child keeps the pid: TryReap, Wait, Signal and the destructor work by pid.
  UniqueFd TakeExitFd() { return std::move(pidfd_); }

 private:
  void KillAndReap();
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is the path; PATH is not searched
  int stdin_fd = -1;              // -1: /dev/null
  int stdout_fd = -1;             // -1: inherit
  int stderr_fd = -1;             // -1: inherit
};

// posix_spawn (vfork-like, nothing allocates between fork and exec) with every fd >= 3
// closed in the child, then pidfd_open. Fails if the program cannot be executed. The
// child gets faasd's environment without NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
// (see server/notify.h).
Result<Child> Spawn(const SpawnOptions& options);

// Reads `fd` until EOF, `max_bytes`, or `deadline` (nullopt: none), whichever is
// first. Unlike faas::ReadAll it stops quietly at the cap and at the deadline: a
// program that hangs or babbles must not hang or fail its caller.
Result<std::string> ReadUntil(int fd, size_t max_bytes,
                              std::optional<std::chrono::steady_clock::time_point> deadline);

struct Captured {
  Child child;  // not reaped yet
  std::string out;
};

// Runs `argv` with stdout (and stderr too when `with_stderr`, else it is inherited)
// into a pipe and reads it (ReadUntil).
Result<Captured> Capture(const std::vector<std::string>& argv, size_t max_bytes,
                         std::optional<std::chrono::steady_clock::time_point> deadline,
                         bool with_stderr);

// Human-readable wait status: "exit 0", "killed by signal 9".
std::string DescribeWaitStatus(int status);

}  // namespace faas::runtime
