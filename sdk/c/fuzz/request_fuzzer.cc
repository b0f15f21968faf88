// libFuzzer target for faas_read_request(): any bytes from a client must give either a
// parsed request whose fields are consistent, or a status, never a crash or a hang.
// Built with -DFAAS_FUZZ=ON (clang): build/sdk/c/sdk_request_fuzzer -max_total_time=60
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "faas.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
  std::thread writer([&] {
    size_t done = 0;
    while (done < size) {
      ssize_t n = send(fds[0], data + done, size - done, MSG_NOSIGNAL);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    shutdown(fds[0], SHUT_WR);
  });
  faas_limits limits{};
  limits.max_head = 4096;
  limits.max_headers = 20;
  limits.max_body = 1 << 16;
  limits.timeout_ms = 2000;
  faas_request req;
  char err[FAAS_ERR_MAX];
  int status = faas_read_request(fds[1], &req, &limits, err, sizeof err);
  if (status == 0) {
    if (req.body == nullptr || req.body[req.body_len] != '\0' || req.body_len > limits.max_body ||
        req.header_count > limits.max_headers || req.method[0] == '\0' ||
        (req.path[0] != '/' && std::strcmp(req.path, "*") != 0)) {
      abort();
    }
    for (size_t i = 0; i < req.header_count; i++) {
      if (std::strpbrk(req.headers[i].name, ": \t\r\n") != nullptr ||
          std::strpbrk(req.headers[i].value, "\r\n") != nullptr) {
        abort();
      }
    }
    char out[64];
    (void)faas_query_param(&req, "a", out, sizeof out);
    faas_request_free(&req);
  } else if (status != -1 && (status < 400 || status > 505 || std::strlen(err) == 0)) {
    abort();
  }
  shutdown(fds[1], SHUT_RDWR);
  writer.join();
  close(fds[0]);
  close(fds[1]);
  return 0;
}
