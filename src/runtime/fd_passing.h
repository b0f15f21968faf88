// Passing one file descriptor over a unix socket with SCM_RIGHTS.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"
#include "common/fd.h"

namespace faas::runtime {

// The payload that accompanies the client socket in the handler protocol.
inline constexpr std::string_view kSocketPayload = "SOCKET";

// Sends `fd` (borrowed; the caller still owns it) with `payload` (1..4096 bytes) in one
// sendmsg on the connected unix socket `sock`. Retries EINTR; blocks if `sock` is blocking.
Status SendFd(int sock, int fd, std::string_view payload);

// Receives one fd and its payload (up to 4096 bytes) from `sock`. Extra fds beyond the first
// are closed. Fails with kUnavailable when the peer closed without sending.
Result<UniqueFd> RecvFd(int sock, std::string* payload);

}  // namespace faas::runtime
