// Answers clients that faasd turns away itself (503 when a function is saturated,
// 429 over its rate limit). Lives on the event loop thread; not thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "common/fd.h"

namespace faas::server {

// A complete `Connection: close` answer with a one-line text/plain body (the reason).
std::string PlainResponse(int status, std::string_view reason, std::string_view extra_headers = {});

class Rejector {
 public:
  explicit Rejector(boost::asio::io_context& io) : io_(io) {}
  ~Rejector();

  // Sends the answer (with `Retry-After: retry_after_s` when > 0) and closes the
  // connection gracefully: the request the client is still sending is read and
  // dropped for up to kLinger, so closing does not reset the connection and
  // destroy the answer before the client read it. Never blocks.
  void Reject(UniqueFd client, int status, std::string_view reason, int retry_after_s);

  size_t lingering() const { return lingering_.size(); }

  static constexpr auto kLinger = std::chrono::seconds(2);
  static constexpr size_t kMaxLingering = 256;  // beyond this, close at once

 private:
  struct Linger;
  void Drain(const std::shared_ptr<Linger>& linger);
  void Close(const std::shared_ptr<Linger>& linger);

  boost::asio::io_context& io_;
  std::set<std::shared_ptr<Linger>> lingering_;
};

}  // namespace faas::server
