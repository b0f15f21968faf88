#include "runtime/fd_passing.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace faas::runtime {

Status SendFd(int sock, int fd, std::string_view payload) {
  if (payload.empty() || payload.size() > 4096)
    return MakeError(Errc::kInvalidArgument, "fd payload must be 1..4096 bytes");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      if (static_cast<size_t>(n) != payload.size())
        return MakeError(Errc::kIo, "sendmsg: short write of fd payload");
      return Ok();
    }
    if (errno != EINTR) return SysError(errno, "sendmsg", Errc::kUnavailable);
  }
}

Result<UniqueFd> RecvFd(int sock, std::string* payload) {
  constexpr int kMaxFds = 8;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  char buf[4096];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return SysError(errno, "recvmsg", Errc::kUnavailable);
  UniqueFd received;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (!received) {
        received.Reset(fd);
      } else {
        ::close(fd);
      }
    }
  }
  if (!received) {
    if (n == 0) return MakeError(Errc::kUnavailable, "peer closed before sending an fd");
    return MakeError(Errc::kInvalidArgument, "message carried no fd");
  }
  if (msg.msg_flags & MSG_CTRUNC)
    return MakeError(Errc::kInvalidArgument, "control data truncated");
  if (payload) payload->assign(buf, static_cast<size_t>(n));
  return received;
}

}  // namespace faas::runtime
