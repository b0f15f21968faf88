#include "common/fd.h"

#include <unistd.h>

namespace faas {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // close() is not retried on EINTR on Linux.
  fd_ = fd;
}

}  // namespace faas
