// A function's TCP listener: accepts clients and hands each one on only once it has
// sent its first byte.
//
// Accepting never spins and never stops for good. When accept fails for lack of
// resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the listener pauses for kPause, logs
// once per kLogInterval with the count, and then accepts again; any other error
// pauses it likewise. The socket has TCP_DEFER_ACCEPT, so a connection that sends
// nothing costs faasd no fd for a while; one that still has nothing to read when
// accepted waits here for at most `first_byte_timeout` and is then closed. It never
// takes a container slot or a place in the function's queue. Connections waiting
// here are limited per client address (across all listeners, see WaitingClients).
//
// Lives on the event loop thread; not thread-safe.
#pragma once

#include <netinet/in.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "common/error.h"
#include "common/fd.h"
#include "net/addresses.h"
#include "server/instance.h"

namespace faas::server {

struct ListenerOptions {
  int port = 80;
  // How long an accepted client may take to send its first byte; 0: hand it on at
  // once (for protocols where the server speaks first).
  std::chrono::milliseconds first_byte_timeout{5000};
  // Connections one client address may have waiting for their first byte, over all
  // functions; more are closed at once.
  size_t max_waiting_per_address = 32;
};

// Counts of connections waiting for their first byte, per client address.
class WaitingClients {
 public:
  bool TryAdd(uint32_t address, size_t limit);
  void Remove(uint32_t address);
  size_t total() const { return total_; }

 private:
  std::map<uint32_t, size_t> by_address_;
  size_t total_ = 0;
};

class Listener {
 public:
  using OnClient = std::function<void(Client client)>;

  struct Stats {
    uint64_t accept_errors = 0;        // failed accepts (each one pauses the listener)
    uint64_t first_byte_timeouts = 0;  // closed: nothing sent within the timeout
    uint64_t refused_waiting = 0;      // closed: too many waiting from that address
  };

  // Binds ip:port and listens; `on_client` gets every client that sent its first byte
  // (with its fd in blocking mode, as the handler expects it, and its peer and accept
  // time filled in).
  static Result<std::unique_ptr<Listener>> Open(boost::asio::io_context& io, std::string name,
                                                net::Ipv4 ip, const ListenerOptions& options,
                                                WaitingClients& waiting, OnClient on_client);
  // Closes the socket and every connection still waiting for its first byte.
  ~Listener();

  void Start();
  const std::string& name() const { return name_; }
  net::Ipv4 ip() const { return ip_; }
  bool paused() const { return paused_; }
  const Stats& stats() const { return stats_; }
  size_t waiting() const { return waiting_.size(); }

  static constexpr auto kPause = std::chrono::milliseconds(100);
  static constexpr auto kLogInterval = std::chrono::seconds(10);
  static constexpr int kAcceptBatch = 64;  // accepts per wake-up: listeners take turns

 private:
  struct Waiting;
  Listener(boost::asio::io_context& io, std::string name, net::Ipv4 ip,
           const ListenerOptions& options, WaitingClients& waiting, OnClient on_client,
           UniqueFd fd);
  void Arm();
  void OnReadable();
  void Pause(int error);
  void Admit(UniqueFd fd, const sockaddr_in& peer);
  void Drop(const std::shared_ptr<Waiting>& waiting, bool timed_out);

  boost::asio::io_context& io_;
  std::string name_;
  net::Ipv4 ip_;
  const ListenerOptions& options_;
  WaitingClients& all_waiting_;
  OnClient on_client_;
  boost::asio::posix::stream_descriptor wait_;  // owns the listening socket
  boost::asio::steady_timer pause_timer_;
  bool paused_ = false;
  uint64_t errors_since_log_ = 0;
  std::chrono::steady_clock::time_point last_log_{};
  std::set<std::shared_ptr<Waiting>> waiting_;
  Stats stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace faas::server
