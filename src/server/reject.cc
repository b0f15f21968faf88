#include "server/reject.h"

#include <sys/socket.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

namespace faas::server {

namespace asio = boost::asio;

std::string PlainResponse(int status, std::string_view reason, std::string_view extra_headers) {
  std::string body = std::string(reason) + "\n";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
  out += extra_headers;
  out += "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
  return out;
}

struct Rejector::Linger {
  Linger(asio::io_context& io, int fd) : socket(io, fd), timer(io) {}
  asio::posix::stream_descriptor socket;
  asio::steady_timer timer;
};

Rejector::~Rejector() {
  for (const auto& linger : lingering_) linger->socket.close();
}

void Rejector::Reject(UniqueFd client, int status, std::string_view reason, int retry_after_s) {
  std::string headers;
  if (retry_after_s > 0) headers = "Retry-After: " + std::to_string(retry_after_s) + "\r\n";
  const std::string response = PlainResponse(status, reason, headers);
  // A fresh connection's send buffer takes a few hundred bytes at once.
  (void)::send(client.get(), response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::shutdown(client.get(), SHUT_WR);
  if (lingering_.size() >= kMaxLingering) return;  // `client` closes here
  auto linger = std::make_shared<Linger>(io_, client.Release());
  lingering_.insert(linger);
  linger->timer.expires_after(kLinger);
  linger->timer.async_wait([this, linger](boost::system::error_code ec) {
    if (!ec) Close(linger);
  });
  Drain(linger);
}

void Rejector::Drain(const std::shared_ptr<Linger>& linger) {
  linger->socket.async_wait(
      asio::posix::stream_descriptor::wait_read, [this, linger](boost::system::error_code ec) {
        if (ec) return;
        char discard[4096];
        ssize_t n;
        while ((n = ::recv(linger->socket.native_handle(), discard, sizeof discard, MSG_DONTWAIT)) >
               0) {
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) return Close(linger);
        Drain(linger);
      });
}

void Rejector::Close(const std::shared_ptr<Linger>& linger) {
  if (lingering_.erase(linger) == 0) return;
  linger->timer.cancel();
  linger->socket.close();
}

}  // namespace faas::server
