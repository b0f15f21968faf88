#include "server/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace faas::server {

namespace asio = boost::asio;

bool WaitingClients::TryAdd(uint32_t address, size_t limit) {
  size_t& count = by_address_[address];
  if (count >= limit) return false;
  ++count;
  ++total_;
  return true;
}

void WaitingClients::Remove(uint32_t address) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  --total_;
  if (--it->second == 0) by_address_.erase(it);
}

struct Listener::Waiting {
  Waiting(asio::io_context& io, Client from, uint32_t address)
      : socket(io, from.fd.Release()), timer(io), address(address), client(std::move(from)) {}
  asio::posix::stream_descriptor socket;
  asio::steady_timer timer;
  uint32_t address;
  Client client;  // all but its fd, which `socket` owns while it waits
};

namespace {

// Errors accept(2) reports for one failed connection; the next may succeed at once.
bool ConnectionError(int error) {
  switch (error) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPERM:
      return true;
    default:
      return false;
  }
}

std::string PeerName(const sockaddr_in& peer) {
  return net::Ipv4{ntohl(peer.sin_addr.s_addr)}.ToString() + ":" +
         std::to_string(ntohs(peer.sin_port));
}

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

}  // namespace

Result<std::unique_ptr<Listener>> Listener::Open(asio::io_context& io, std::string name,
                                                 net::Ipv4 ip, const ListenerOptions& options,
                                                 WaitingClients& waiting, OnClient on_client) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return SysError(errno, "socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (options.first_byte_timeout.count() > 0) {
    // The kernel keeps a connection that sent nothing out of the accept queue for
    // about this long (rounded to its SYN-ACK retransmissions).
    int seconds = static_cast<int>((options.first_byte_timeout.count() + 999) / 1000);
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options.port));
  addr.sin_addr.s_addr = htonl(ip.value);
  std::string where = ip.ToString() + ":" + std::to_string(options.port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return SysError(errno, "bind " + where);
  if (::listen(fd.get(), SOMAXCONN) != 0) return SysError(errno, "listen " + where);
  return std::unique_ptr<Listener>(
      new Listener(io, std::move(name), ip, options, waiting, std::move(on_client), std::move(fd)));
}

Listener::Listener(asio::io_context& io, std::string name, net::Ipv4 ip,
                   const ListenerOptions& options, WaitingClients& waiting, OnClient on_client,
                   UniqueFd fd)
    : io_(io),
      name_(std::move(name)),
      ip_(ip),
      options_(options),
      all_waiting_(waiting),
      on_client_(std::move(on_client)),
      wait_(io, fd.Release()),
      pause_timer_(io) {}

Listener::~Listener() {
  for (const auto& waiting : waiting_) all_waiting_.Remove(waiting->address);
  // Handlers already queued must not touch this object: `alive_` tells them.
  *alive_ = false;
}

void Listener::Start() { Arm(); }

void Listener::Arm() {
  wait_.async_wait(asio::posix::stream_descriptor::wait_read,
                   [this, alive = alive_](boost::system::error_code ec) {
                     if (!ec && *alive) OnReadable();
                   });
}

void Listener::OnReadable() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    UniqueFd client(
        ::accept4(wait_.native_handle(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
    if (!client) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (ConnectionError(errno)) continue;
      return Pause(errno);
    }
    Admit(std::move(client), peer);
  }
  Arm();
}

void Listener::Pause(int error) {
  ++stats_.accept_errors;
  ++errors_since_log_;
  auto now = std::chrono::steady_clock::now();
  if (now - last_log_ >= kLogInterval) {
    spdlog::warn("accept on {} ({}): {}; pausing it for {} ms ({} time(s) in the last {} s)", name_,
                 ip_.ToString(), std::strerror(error), kPause.count(), errors_since_log_,
                 std::chrono::duration_cast<std::chrono::seconds>(kLogInterval).count());
    errors_since_log_ = 0;
    last_log_ = now;
  }
  paused_ = true;
  pause_timer_.expires_after(kPause);
  pause_timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (ec || !*alive) return;
    paused_ = false;
    Arm();
  });
}

void Listener::Admit(UniqueFd fd, const sockaddr_in& peer) {
  Client client{.fd = std::move(fd), .peer = PeerName(peer)};
  if (options_.first_byte_timeout.count() == 0 || Readable(client.fd.get()))
    return on_client_(std::move(client));
  const uint32_t address = ntohl(peer.sin_addr.s_addr);
  if (!all_waiting_.TryAdd(address, options_.max_waiting_per_address)) {
    ++stats_.refused_waiting;
    spdlog::debug("{}: {} has {} connections waiting for a first byte; closing another", name_,
                  net::Ipv4{address}.ToString(), options_.max_waiting_per_address);
    return;
  }
  auto waiting = std::make_shared<Waiting>(io_, std::move(client), address);
  waiting_.insert(waiting);
  waiting->timer.expires_after(options_.first_byte_timeout);
  waiting->timer.async_wait([this, alive = alive_, waiting](boost::system::error_code ec) {
    if (!ec && *alive) Drop(waiting, /*timed_out=*/true);
  });
  waiting->socket.async_wait(asio::posix::stream_descriptor::wait_read,
                             [this, alive = alive_, waiting](boost::system::error_code ec) {
                               if (ec || !*alive || !waiting_.count(waiting)) return;
                               waiting->timer.cancel();
                               Client client = std::move(waiting->client);
                               client.fd = UniqueFd(waiting->socket.release());
                               Drop(waiting, /*timed_out=*/false);
                               // Waiting made it non-blocking; the handler expects a
                               // plain socket.
                               int fd = client.fd.get();
                               int flags = ::fcntl(fd, F_GETFL);
                               if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
                               on_client_(std::move(client));
                             });
}

void Listener::Drop(const std::shared_ptr<Waiting>& waiting, bool timed_out) {
  if (!waiting_.erase(waiting)) return;
  all_waiting_.Remove(waiting->address);
  if (timed_out) {
    ++stats_.first_byte_timeouts;
    spdlog::debug("{}: a client sent nothing within {} ms; closed", name_,
                  options_.first_byte_timeout.count());
  }
  boost::system::error_code ignored;
  waiting->timer.cancel();
  waiting->socket.close(ignored);
}

}  // namespace faas::server
