// A Clock the test moves by hand: Advance() runs the timers that fall due, in order.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "server/clock.h"

namespace faas::server {

class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return now_; }
  std::unique_ptr<Timer> MakeTimer() override { return std::make_unique<FakeTimer>(this); }

  void Advance(std::chrono::milliseconds by) {
    const TimePoint until = now_ + by;
    for (;;) {
      auto due = std::min_element(timers_.begin(), timers_.end(),
                                  [](auto* a, auto* b) { return a->Key() < b->Key(); });
      if (due == timers_.end() || !(*due)->armed || (*due)->when > until) break;
      now_ = (*due)->when;
      (*due)->armed = false;
      auto fn = std::move((*due)->fn);
      fn();
    }
    now_ = until;
  }

 private:
  struct FakeTimer final : Timer {
    explicit FakeTimer(FakeClock* clock) : clock(clock) { clock->timers_.push_back(this); }
    ~FakeTimer() override { std::erase(clock->timers_, this); }
    void At(TimePoint t, std::function<void()> f) override {
      when = t;
      fn = std::move(f);
      armed = true;
    }
    void Cancel() override { armed = false; }
    // Unarmed timers sort last.
    std::pair<bool, TimePoint> Key() const { return {!armed, when}; }

    FakeClock* clock;
    TimePoint when{};
    std::function<void()> fn;
    bool armed = false;
  };

  TimePoint now_ = TimePoint(std::chrono::hours(1));
  std::vector<FakeTimer*> timers_;
};

}  // namespace faas::server
