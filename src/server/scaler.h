// The warm pool and the admission control of one function.
//
// Pool: `target` containers are kept started without a client, their handlers
// waiting on /control.sock. With warm 0 (faasd's default) no pool is asked for: the
// target stays 0 whatever warm_max is, so no container ever starts without a client,
// and a reused container that no client is waiting for is stopped. A client takes
// a ready one (else a starting one, else a container is started for it) and the
// pool refills at once. A client that finds no ready container raises the target
// by one, up to warm_max; every kAdaptPeriod without such a miss lowers it by one,
// down to warm. After idle_timeout without clients the target is 0 and the pool is
// stopped; the next client brings it back. Pooled containers that die before getting a client
// delay the next refill, doubling from kMinBackoff up to kMaxBackoff, so a broken
// handler never makes faasd spin. Pooled and serving containers together stay
// within max_concurrency + warm: when every slot is busy, more containers waiting
// ahead would only slow the serving ones down. With reuse, a container that has served a
// client and may serve more goes back into the pool (never across a redeploy),
// and counts toward the target while it is still serving.
//
// Admission: at most max_concurrency containers serve clients at once; the rest
// wait in a FIFO of at most `queue` for at most queue_timeout, else get 503 with
// Retry-After. With a rate limit, clients beyond the token bucket get 429.
//
// The scaler owns its function's containers: the pool, those serving, those of an
// older version finishing their requests, the pooled ones a redeploy stopped (see
// AfterOldPoolGone), and the one a deploy started to check its version (see
// Adopt). Lives on the event loop thread; not thread-safe.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/fd.h"
#include "server/clock.h"
#include "server/instance.h"
#include "server/reject.h"
#include "server/telemetry.h"
#include "store/limits.h"

namespace faas::server {

class Scaler {
 public:
  // Creates (does not start) a container of the function's current version that
  // reports to `events`; `client` may be empty (a pooled container). nullptr when no
  // container may start (the function is going away).
  using Factory = std::function<std::shared_ptr<Instance>(Client client, Instance::Events events)>;

  // `on_gone` runs after each container of this scaler is gone, as the last thing the
  // scaler does then (its owner may decide to drop the scaler, though not from inside
  // the call). `telemetry` gets a record of each client answered 429 or 503 here (the
  // containers report the clients they serve); it must outlive the scaler.
  Scaler(Clock& clock, Rejector& rejector, Telemetry& telemetry, std::string name,
         store::ScalingOptions options, Factory make, std::function<void()> on_gone);
  ~Scaler();

  // A client connected to the function's address. Its queue wait is set here.
  void OnClient(Client client);
  // Starts containers until the pool has its target size (or a back-off holds it).
  void Refill();
  // Periodic (about once a second): idle timeout, adaptation, refills.
  void Tick();

  // Takes over `container`, of the current version and ready without a client (the
  // one a deploy started to check that the version starts): into the pool when the
  // pool has room, else it is stopped, and AfterOldPoolGone waits for it to be gone.
  // Starts nothing: call Refill next.
  void Adopt(std::shared_ptr<Instance> container);
  // New settings and a new version (redeploy): pooled containers of the old version
  // are stopped, those serving finish without reuse, and the pool refills from the
  // new one, starting with `first` when given (see Adopt).
  void Reload(store::ScalingOptions options, std::shared_ptr<Instance> first = nullptr);
  // Calls `then` once no pooled container a redeploy (or Adopt) stopped is left
  // (their cleanup takes a few ms): at once if none.
  void AfterOldPoolGone(std::function<void()> then);
  // No more containers (function removed, shutdown): stops the pool and answers
  // queued clients 503. Containers serving finish.
  void Stop();
  // Kills every container now (drain timeout).
  void KillAll(const char* why);

  // Containers alive (any state).
  size_t size() const { return all_.size(); }
  // Whether a container holds (or held) a client: its connection lives on the
  // function's address. Pooled ones do not count.
  bool serving_clients() const;
  nlohmann::json Stats() const;

  static constexpr auto kAdaptPeriod = std::chrono::seconds(10);
  static constexpr auto kMinBackoff = std::chrono::milliseconds(100);
  static constexpr auto kMaxBackoff = std::chrono::seconds(30);

 private:
  struct Queued {
    Client client;
    Clock::TimePoint since;
    Clock::TimePoint deadline;
  };

  Instance::Events MyEvents();
  std::shared_ptr<Instance> Create(Client client);
  void OnDone(Instance* container);
  void OnIdle(Instance* container);
  void OnPooledFailed();
  bool TakeToken();
  void Reject503(Client client);  // full queue, queue timeout, stopped
  void Reported(const Client& client, Outcome outcome, int status);
  Client Waited(Queued queued) const;
  void Dispatch(Client client);
  bool AttachPooled(Client& client);
  void Missed();
  void DrainQueue();
  void ShrinkTo(size_t size, const char* why, bool redeployed = false);
  void ArmQueueTimer();
  void OnQueueTimer();
  void ArmRefillTimer();
  size_t CountReady() const;

  Clock& clock_;
  Rejector& rejector_;
  Telemetry& telemetry_;
  std::string name_;
  store::ScalingOptions options_;
  Factory make_;
  std::function<void()> on_gone_;
  bool stopped_ = false;

  std::map<Instance*, std::shared_ptr<Instance>> all_;  // owns every container
  std::deque<Instance*> pool_;                          // no client yet, oldest first
  std::set<Instance*> serving_;                         // have a client
  std::set<Instance*> retiring_;                        // serving, but of an old version: no reuse
  std::set<Instance*> old_pool_;  // pooled ones a redeploy or Adopt stopped, not gone yet
  std::vector<std::function<void()>> old_pool_waiters_;
  std::deque<Queued> queue_;
  std::unique_ptr<Clock::Timer> queue_timer_;

  uint32_t target_ = 0;
  Clock::TimePoint last_client_;
  Clock::TimePoint last_adapt_;
  bool missed_ = false;  // a client found no ready container since last_adapt_

  int failures_in_row_ = 0;
  Clock::TimePoint refill_not_before_;
  std::unique_ptr<Clock::Timer> refill_timer_;

  double tokens_ = 0;
  Clock::TimePoint tokens_at_;

  struct Counters {
    uint64_t requests = 0, warm_starts = 0, cold_starts = 0, rejected_503 = 0, rejected_429 = 0,
             pool_failures = 0;
  } counters_;
};

}  // namespace faas::server
