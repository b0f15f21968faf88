// The warm pool and the admission control of one function.
//
// Pool: `target` containers are kept started without a client, their handlers
// waiting on /control.sock. A client takes a ready one (else a starting one,
// else a container is started for it) and the pool refills at once. A client
// that finds no ready container raises the target by one, up to warm_max; every
// kAdaptPeriod without such a miss lowers it by one, down to warm. After
// idle_timeout without clients the target is 0 and the pool is stopped; the next
// client brings it back. Pooled containers that die before getting a client
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
// Lives on the event loop thread; not thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/fd.h"
#include "server/reject.h"
#include "server/request.h"
#include "store/limits.h"

namespace faas::server {

class Scaler {
 public:
  using Clock = std::chrono::steady_clock;
  // Creates (does not start) a container of the function's current version and
  // registers it with its owner; `client` may be empty (a pooled container).
  using MakeContainer = std::function<std::shared_ptr<Container>(UniqueFd client)>;

  Scaler(boost::asio::io_context& io, Rejector& rejector, std::string name,
         store::ScalingOptions options, MakeContainer make);
  ~Scaler();

  // A client connected to the function's address.
  void OnClient(UniqueFd client);
  // Every container of this function reports here when it is done, and a reused
  // one when it is ready for its next client; containers the scaler does not know
  // (of an older function of the same name) are ignored.
  void OnDone(Container* container);
  void OnIdle(Container* container);
  // Starts containers until the pool has its target size (or a back-off holds it).
  void Refill();
  // Periodic (about once a second): idle timeout, adaptation, refills.
  void Tick();

  // New settings and a new version (redeploy): pooled containers of the old version
  // are stopped (returned, so the caller can wait for them to be gone) and the pool
  // refills from the new one.
  std::vector<std::shared_ptr<Container>> Reload(store::ScalingOptions options);
  // No more containers (function removed, shutdown): stops the pool and answers
  // queued clients 503.
  void Stop();

  nlohmann::json Stats() const;

  static constexpr auto kAdaptPeriod = std::chrono::seconds(10);
  static constexpr auto kMinBackoff = std::chrono::milliseconds(100);
  static constexpr auto kMaxBackoff = std::chrono::seconds(30);

 private:
  struct Queued {
    UniqueFd client;
    Clock::time_point deadline;
  };

  bool TakeToken();
  void Reject503(UniqueFd client);  // full queue, queue timeout, stopped
  void Dispatch(UniqueFd client);
  bool AttachPooled(UniqueFd& client);
  void Missed();
  void DrainQueue();
  void ShrinkTo(size_t size, const char* why,
                std::vector<std::shared_ptr<Container>>* stopped = nullptr);
  void ArmQueueTimer();
  void OnQueueTimer();
  void ArmRefillTimer();
  size_t CountReady() const;

  Rejector& rejector_;
  std::string name_;
  store::ScalingOptions options_;
  MakeContainer make_;
  bool stopped_ = false;

  std::deque<std::shared_ptr<Container>> pool_;  // no client yet, oldest first
  std::set<Container*> serving_;                 // have a client
  std::set<Container*> retiring_;                // serving, but of an old version: no reuse
  std::deque<Queued> queue_;
  boost::asio::steady_timer queue_timer_;

  uint32_t target_ = 0;
  Clock::time_point last_client_;
  Clock::time_point last_adapt_;
  bool missed_ = false;  // a client found no ready container since last_adapt_

  int failures_in_row_ = 0;
  Clock::time_point refill_not_before_;
  boost::asio::steady_timer refill_timer_;

  double tokens_ = 0;
  Clock::time_point tokens_at_;

  struct Counters {
    uint64_t requests = 0, warm_starts = 0, cold_starts = 0, rejected_503 = 0, rejected_429 = 0,
             pool_failures = 0;
  } counters_;
};

}  // namespace faas::server
