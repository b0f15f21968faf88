// Time for the event loop's objects, behind a seam so their timing rules can be
// unit-tested with a clock the test moves by hand.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace faas::server {

// Whole milliseconds of the steady clock since `start` (for logs).
inline long MillisSince(std::chrono::steady_clock::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - start)
                               .count());
}

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // One pending callback at a time, run on the event loop: At() replaces the one
  // set before, Cancel() and the destructor drop it unrun.
  class Timer {
   public:
    virtual ~Timer() = default;
    virtual void At(TimePoint when, std::function<void()> fn) = 0;
    virtual void Cancel() = 0;
  };

  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  virtual std::unique_ptr<Timer> MakeTimer() = 0;
};

// std::chrono::steady_clock with timers on an io_context.
class LoopClock final : public Clock {
 public:
  explicit LoopClock(boost::asio::io_context& io) : io_(io) {}
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  std::unique_ptr<Timer> MakeTimer() override;

 private:
  boost::asio::io_context& io_;
};

}  // namespace faas::server
