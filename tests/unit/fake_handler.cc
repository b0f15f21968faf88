// A stand-in for a container's handler, started by the fake runtime of
// container_test: `fake_handler MODE CONTROL_SOCKET`.
//   serve        connect, take the client, answer it, exit 0
//   exit1        exit 1 at once, never connecting
//   complain     write "line 1" to "line 12" to stderr, exit 3, never connecting
//   never        never connect; wait to be killed
//   die-after    connect, take the client, then die by SIGKILL without answering
//   hold         connect, take the client, keep it until killed
//   chatty       connect, take the client, write to stdout and stderr (a line of
//                20000 bytes among them, and a last one without its newline),
//                answer, exit 0
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/fd.h"
#include "runtime/fd_passing.h"

namespace {

faas::UniqueFd TakeClient(const char* path) {
  faas::UniqueFd control(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (::connect(control.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) _exit(3);
  std::string payload;
  auto client = faas::runtime::RecvFd(control.get(), &payload);
  if (!client.ok() || payload != "SOCKET") _exit(4);
  return std::move(client).value();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string mode = argv[1];
  if (mode == "exit1") return 1;
  if (mode == "complain") {
    for (int i = 1; i <= 12; ++i) {
      const std::string line = "line " + std::to_string(i) + "\n";
      if (::write(2, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 5;
    }
    return 3;
  }
  if (mode == "never") {
    for (;;) ::pause();
  }
  faas::UniqueFd client = TakeClient(argv[2]);
  if (mode == "die-after") ::raise(SIGKILL);
  if (mode == "hold") {
    for (;;) ::pause();
  }
  if (mode == "chatty") {
    const std::string out = "out 1\n" + std::string(20000, 'x') + "\nout 2\nno newline";
    const std::string err = "err 1\n";
    if (::write(1, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return 5;
    if (::write(2, err.data(), err.size()) != static_cast<ssize_t>(err.size())) return 5;
  }
  const char answer[] = "HTTP/1.0 200 OK\r\n\r\nhello\n";
  return ::write(client.get(), answer, sizeof answer - 1) == sizeof answer - 1 ? 0 : 5;
}
