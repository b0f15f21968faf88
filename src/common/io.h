// Whole-buffer reads and writes on a borrowed fd: the loops that retry EINTR and
// carry on after a short count, written once.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/error.h"

namespace faas {

// Writes all of `data` to `fd` (borrowed), retrying after EINTR and short writes.
// Blocks as long as `fd` blocks; on a non-blocking fd EAGAIN is a failure like any
// other. Fails with kIo ("write: <strerror>", sys_errno set), after which an unknown
// prefix of `data` has been written. On a socket or pipe whose reader is gone the
// caller must have SIGPIPE ignored to see EPIPE instead of dying.
Status WriteAll(int fd, std::string_view data);

// WriteAll with `write` standing in for ::write: a callable (int fd, const void*,
// size_t) -> ssize_t that sets errno on failure, as ::write does. It is the seam
// through which tests make a write fail or come up short.
template <typename WriteFn>
Status WriteAllWith(WriteFn&& write, int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Ok();
}

// Reads `fd` (borrowed) to end of file, retrying after EINTR. Fails with kTooLarge
// ("larger than N bytes") as soon as more than `max_bytes` arrive (it reads at most
// one byte past the cap), and with kIo ("read: <strerror>", sys_errno set) when a read
// fails (EAGAIN included: a non-blocking fd must be readable to its end). Memory grows
// with what was read, never to `max_bytes` up front.
Result<std::string> ReadAll(int fd, size_t max_bytes);

}  // namespace faas
