#include "server/clock.h"

#include <boost/asio/steady_timer.hpp>

namespace faas::server {
namespace {

class LoopTimer final : public Clock::Timer {
 public:
  explicit LoopTimer(boost::asio::io_context& io) : timer_(io) {}
  void At(Clock::TimePoint when, std::function<void()> fn) override {
    timer_.expires_at(when);  // cancels the wait set before
    timer_.async_wait([fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec) fn();
    });
  }
  void Cancel() override { timer_.cancel(); }

 private:
  boost::asio::steady_timer timer_;
};

}  // namespace

std::unique_ptr<Clock::Timer> LoopClock::MakeTimer() { return std::make_unique<LoopTimer>(io_); }

}  // namespace faas::server
