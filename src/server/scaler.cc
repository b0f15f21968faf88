#include "server/scaler.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"
#include "server/telemetry.h"

namespace faas::server {

Scaler::Scaler(Clock& clock, Rejector& rejector, Telemetry& telemetry, std::string name,
               store::ScalingOptions options, Factory make, std::function<void()> on_gone)
    : clock_(clock),
      rejector_(rejector),
      telemetry_(telemetry),
      name_(std::move(name)),
      options_(options),
      make_(std::move(make)),
      on_gone_(std::move(on_gone)),
      queue_timer_(clock.MakeTimer()),
      target_(options.warm),
      last_client_(clock.Now()),
      last_adapt_(last_client_),
      refill_timer_(clock.MakeTimer()),
      tokens_(std::max(1.0, options.rate_limit)),
      tokens_at_(last_client_) {}

Scaler::~Scaler() = default;

Instance::Events Scaler::MyEvents() {
  return {.done = [this](Instance* c) { OnDone(c); },
          .idle = [this](Instance* c) { OnIdle(c); },
          .ready = {}};
}

std::shared_ptr<Instance> Scaler::Create(Client client) {
  auto container = make_(std::move(client), MyEvents());
  if (container) all_.emplace(container.get(), container);
  return container;
}

void Scaler::Adopt(std::shared_ptr<Instance> container) {
  container->SetEvents(MyEvents());
  pool_.push_back(container.get());
  all_.emplace(container.get(), std::move(container));
  ShrinkTo(stopped_ ? 0 : target_, "started only to check the deploy", /*redeployed=*/true);
}

void Scaler::OnClient(Client client) {
  if (stopped_) return;
  ++counters_.requests;
  last_client_ = clock_.Now();
  if (target_ == 0 && options_.warm > 0) target_ = options_.warm;  // back from zero
  if (options_.rate_limit > 0 && !TakeToken()) {
    ++counters_.rejected_429;
    int retry = static_cast<int>(std::ceil((1.0 - tokens_) / options_.rate_limit));
    Reported(client, Outcome::kRejectedRate, 429);
    rejector_.Reject(std::move(client.fd), 429, "Too Many Requests", std::max(1, retry));
    return;
  }
  if (serving_.size() < options_.max_concurrency) return Dispatch(std::move(client));
  if (queue_.size() < options_.queue) {
    queue_.push_back({std::move(client), last_client_,
                      last_client_ + std::chrono::milliseconds(options_.queue_timeout_ms)});
    if (queue_.size() == 1) ArmQueueTimer();
    return;
  }
  Reject503(std::move(client));
}

// A queued client leaving the queue, its wait recorded.
Client Scaler::Waited(Queued queued) const {
  queued.client.queue_wait =
      std::chrono::duration_cast<std::chrono::microseconds>(clock_.Now() - queued.since);
  return std::move(queued.client);
}

void Scaler::Reject503(Client client) {
  ++counters_.rejected_503;
  Reported(client, Outcome::kRejectedQueue, 503);
  rejector_.Reject(std::move(client.fd), 503, "Service Unavailable", 1);
}

// The record of a client faasd answers itself, without a container.
void Scaler::Reported(const Client& client, Outcome outcome, int status) {
  RequestRecord record;
  record.function = name_;
  record.client = client.peer;
  record.outcome = outcome;
  record.accepted = client.accepted_wall;
  record.queue_wait = client.queue_wait;
  record.duration = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - client.accepted);
  record.answered = status;
  telemetry_.OnRequest(record);
}

// Token bucket: `rate_limit` tokens a second, holding at most max(1, rate_limit).
bool Scaler::TakeToken() {
  auto now = clock_.Now();
  double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
  tokens_ = std::min(std::max(1.0, options_.rate_limit), tokens_ + elapsed * options_.rate_limit);
  tokens_at_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

void Scaler::Dispatch(Client client) {
  if (AttachPooled(client)) return Refill();
  ++counters_.cold_starts;
  Missed();
  if (auto container = Create(std::move(client))) {
    serving_.insert(container.get());
    container->Start();
  }
  Refill();
}

// Gives the client to a ready pooled container, else to one still starting.
bool Scaler::AttachPooled(Client& client) {
  while (!pool_.empty()) {
    auto it = std::find_if(pool_.begin(), pool_.end(), [](Instance* c) { return c->ready(); });
    if (it == pool_.end()) it = pool_.begin();
    std::shared_ptr<Instance> container = all_.at(*it);
    pool_.erase(it);
    const bool was_ready = container->ready();
    if (!container->Attach(client)) {
      ++counters_.pool_failures;  // died while pooled; its exit is on its way
      continue;
    }
    serving_.insert(container.get());
    if (was_ready) {
      ++counters_.warm_starts;
      failures_in_row_ = 0;
    } else {
      ++counters_.cold_starts;
      Missed();
    }
    return true;
  }
  return false;
}

// A client found no ready container: the pool is too small for the arrival rate.
void Scaler::Missed() {
  if (options_.warm == 0) return;
  missed_ = true;
  if (target_ < options_.warm_max) ++target_;
}

void Scaler::OnIdle(Instance* container) {
  if (!serving_.erase(container)) return container->Kill("not serving");
  if (stopped_ || retiring_.erase(container)) {
    container->Kill(stopped_ ? "stopped" : "redeployed");
  } else {
    pool_.push_front(container);  // warm caches: preferred
  }
  DrainQueue();
  Refill();
}

void Scaler::OnDone(Instance* container) {
  auto found = all_.find(container);
  if (found == all_.end()) return;
  // Keeps the container alive until its bookkeeping here is done.
  std::shared_ptr<Instance> self = std::move(found->second);
  all_.erase(found);
  retiring_.erase(container);
  if (old_pool_.erase(container) && old_pool_.empty()) {
    auto waiters = std::move(old_pool_waiters_);
    old_pool_waiters_.clear();
    for (auto& then : waiters) then();
  }
  if (serving_.erase(container)) {
    DrainQueue();
    Refill();
  } else if (auto it = std::find(pool_.begin(), pool_.end(), container); it != pool_.end()) {
    pool_.erase(it);
    OnPooledFailed();
  }
  if (on_gone_) on_gone_();
}

// A pooled container ended before getting a client: the next start waits, longer
// each time in a row, so a broken handler never makes faasd spin.
void Scaler::OnPooledFailed() {
  ++counters_.pool_failures;
  ++failures_in_row_;
  auto backoff = std::min<Clock::TimePoint::duration>(
      kMaxBackoff, kMinBackoff * (1 << std::min(failures_in_row_ - 1, 16)));
  refill_not_before_ = clock_.Now() + backoff;
  spdlog::warn(
      "{}: a pooled container ended before getting a client ({} in a row); next start "
      "in {} ms",
      name_, failures_in_row_,
      std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count());
  ArmRefillTimer();
}

void Scaler::DrainQueue() {
  while (!queue_.empty() && serving_.size() < options_.max_concurrency) {
    Client client = Waited(std::move(queue_.front()));
    queue_.pop_front();
    Dispatch(std::move(client));
  }
  ArmQueueTimer();
}

void Scaler::Refill() {
  if (stopped_) return;
  // Reused containers still serving come back: they count as pooled.
  const size_t returning =
      static_cast<size_t>(std::count_if(serving_.begin(), serving_.end(), [this](Instance* c) {
        return c->may_serve_again() && !retiring_.count(c);
      }));
  if (pool_.size() > target_) ShrinkTo(target_, "pool shrinking");
  if (clock_.Now() < refill_not_before_) return ArmRefillTimer();
  // Containers beyond what may serve at once only compete for the CPU with those
  // serving: with every slot busy the pool keeps no more than `warm`.
  const size_t cap = options_.max_concurrency + options_.warm;
  // A container that fails at once sets a back-off and leaves the pool: stop then.
  for (size_t started = 0; pool_.size() + returning < target_ &&
                           pool_.size() + serving_.size() < cap && started < target_;
       ++started) {
    auto container = Create(Client{});
    if (!container) return;
    pool_.push_back(container.get());
    container->Start();
    if (clock_.Now() < refill_not_before_) return;
  }
}

void Scaler::ShrinkTo(size_t size, const char* why, bool redeployed) {
  while (pool_.size() > size) {
    // The newest: likely still starting.
    std::shared_ptr<Instance> container = all_.at(pool_.back());
    pool_.pop_back();
    if (redeployed) old_pool_.insert(container.get());
    container->Kill(why);
  }
}

void Scaler::Tick() {
  if (stopped_ || target_ == 0) return;
  auto now = clock_.Now();
  if (now - last_client_ >= std::chrono::milliseconds(options_.idle_timeout_ms)) {
    spdlog::info("{}: no request for {} ms, stopping its {} pooled container(s)", name_,
                 options_.idle_timeout_ms, pool_.size());
    target_ = 0;
    return ShrinkTo(0, "idle");
  }
  if (now - last_adapt_ >= kAdaptPeriod) {
    if (!missed_ && target_ > options_.warm) --target_;
    missed_ = false;
    last_adapt_ = now;
  }
  Refill();
}

void Scaler::Reload(store::ScalingOptions options, std::shared_ptr<Instance> first) {
  options_ = options;
  ShrinkTo(0, "redeployed", /*redeployed=*/true);
  retiring_ = serving_;
  target_ = options_.warm == 0
                ? 0
                : std::clamp(std::max(target_, options_.warm), options_.warm, options_.warm_max);
  last_client_ = clock_.Now();
  failures_in_row_ = 0;
  refill_not_before_ = {};
  refill_timer_->Cancel();
  if (first) Adopt(std::move(first));
  DrainQueue();
  Refill();
}

void Scaler::AfterOldPoolGone(std::function<void()> then) {
  if (old_pool_.empty()) return then();
  old_pool_waiters_.push_back(std::move(then));
}

void Scaler::Stop() {
  stopped_ = true;
  ShrinkTo(0, "stopped");
  for (auto& queued : queue_) Reject503(Waited(std::move(queued)));
  queue_.clear();
  queue_timer_->Cancel();
  refill_timer_->Cancel();
}

void Scaler::KillAll(const char* why) {
  std::vector<std::shared_ptr<Instance>> all;
  for (auto& [ptr, container] : all_) all.push_back(container);
  for (auto& container : all) container->Kill(why);
}

bool Scaler::serving_clients() const {
  return std::any_of(all_.begin(), all_.end(),
                     [](const auto& entry) { return entry.first->served(); });
}

void Scaler::ArmQueueTimer() {
  if (queue_.empty()) return queue_timer_->Cancel();
  queue_timer_->At(queue_.front().deadline, [this] { OnQueueTimer(); });
}

void Scaler::OnQueueTimer() {
  auto now = clock_.Now();
  while (!queue_.empty() && queue_.front().deadline <= now) {
    Reject503(Waited(std::move(queue_.front())));
    queue_.pop_front();
  }
  ArmQueueTimer();
}

void Scaler::ArmRefillTimer() {
  refill_timer_->At(refill_not_before_, [this] { Refill(); });
}

size_t Scaler::CountReady() const {
  return static_cast<size_t>(
      std::count_if(pool_.begin(), pool_.end(), [](Instance* c) { return c->ready(); }));
}

nlohmann::json Scaler::Stats() const {
  const size_t ready = CountReady();
  return {{"pool_ready", ready},
          {"pool_starting", pool_.size() - ready},
          {"pool_target", target_},
          {"active", serving_.size()},
          {"queued", queue_.size()},
          {"requests", counters_.requests},
          {"warm_starts", counters_.warm_starts},
          {"cold_starts", counters_.cold_starts},
          {"rejected_503", counters_.rejected_503},
          {"rejected_429", counters_.rejected_429},
          {"pool_failures", counters_.pool_failures}};
}

}  // namespace faas::server
