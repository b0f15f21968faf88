#include "server/scaler.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"

namespace faas::server {

Scaler::Scaler(boost::asio::io_context& io, Rejector& rejector, std::string name,
               store::ScalingOptions options, MakeContainer make)
    : rejector_(rejector),
      name_(std::move(name)),
      options_(options),
      make_(std::move(make)),
      queue_timer_(io),
      target_(options.warm),
      last_client_(Clock::now()),
      last_adapt_(last_client_),
      refill_timer_(io),
      tokens_(std::max(1.0, options.rate_limit)),
      tokens_at_(last_client_) {}

Scaler::~Scaler() = default;

void Scaler::OnClient(UniqueFd client) {
  if (stopped_) return;
  ++counters_.requests;
  last_client_ = Clock::now();
  if (target_ == 0 && options_.warm > 0) target_ = options_.warm;  // back from zero
  if (options_.rate_limit > 0 && !TakeToken()) {
    ++counters_.rejected_429;
    int retry = static_cast<int>(std::ceil((1.0 - tokens_) / options_.rate_limit));
    rejector_.Reject(std::move(client), 429, "Too Many Requests", std::max(1, retry));
    return;
  }
  if (serving_.size() < options_.max_concurrency) return Dispatch(std::move(client));
  if (queue_.size() < options_.queue) {
    queue_.push_back(
        {std::move(client), last_client_ + std::chrono::milliseconds(options_.queue_timeout_ms)});
    if (queue_.size() == 1) ArmQueueTimer();
    return;
  }
  Reject503(std::move(client));
}

void Scaler::Reject503(UniqueFd client) {
  ++counters_.rejected_503;
  rejector_.Reject(std::move(client), 503, "Service Unavailable", 1);
}

// Token bucket: `rate_limit` tokens a second, holding at most max(1, rate_limit).
bool Scaler::TakeToken() {
  auto now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
  tokens_ = std::min(std::max(1.0, options_.rate_limit), tokens_ + elapsed * options_.rate_limit);
  tokens_at_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

void Scaler::Dispatch(UniqueFd client) {
  if (AttachPooled(client)) return Refill();
  ++counters_.cold_starts;
  Missed();
  auto container = make_(std::move(client));
  if (container) {
    serving_.insert(container.get());
    container->Start();
  }
  Refill();
}

// Gives the client to a ready pooled container, else to one still starting.
bool Scaler::AttachPooled(UniqueFd& client) {
  while (!pool_.empty()) {
    auto it = std::find_if(pool_.begin(), pool_.end(), [](const auto& c) { return c->ready(); });
    if (it == pool_.end()) it = pool_.begin();
    std::shared_ptr<Container> container = *it;
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

void Scaler::OnIdle(Container* container) {
  if (!serving_.erase(container)) return container->Kill("not this function's");
  if (stopped_ || retiring_.erase(container)) {
    container->Kill(stopped_ ? "stopped" : "redeployed");
  } else {
    pool_.push_front(container->shared_from_this());  // warm caches: preferred
  }
  DrainQueue();
  Refill();
}

void Scaler::OnDone(Container* container) {
  retiring_.erase(container);
  if (serving_.erase(container)) {
    DrainQueue();
    return Refill();
  }
  auto it = std::find_if(pool_.begin(), pool_.end(),
                         [container](const auto& c) { return c.get() == container; });
  if (it == pool_.end()) return;  // stopped by us, or not ours
  pool_.erase(it);
  ++counters_.pool_failures;
  ++failures_in_row_;
  auto backoff = std::min<Clock::duration>(kMaxBackoff,
                                           kMinBackoff * (1 << std::min(failures_in_row_ - 1, 16)));
  refill_not_before_ = Clock::now() + backoff;
  spdlog::warn(
      "{}: a pooled container ended before getting a client ({} in a row); next start "
      "in {} ms",
      name_, failures_in_row_,
      std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count());
  ArmRefillTimer();
}

void Scaler::DrainQueue() {
  while (!queue_.empty() && serving_.size() < options_.max_concurrency) {
    UniqueFd client = std::move(queue_.front().client);
    queue_.pop_front();
    Dispatch(std::move(client));
  }
  ArmQueueTimer();
}

void Scaler::Refill() {
  if (stopped_) return;
  // Reused containers still serving come back: they count as pooled.
  const size_t returning =
      static_cast<size_t>(std::count_if(serving_.begin(), serving_.end(), [this](Container* c) {
        return c->may_serve_again() && !retiring_.count(c);
      }));
  if (pool_.size() > target_) ShrinkTo(target_, "pool shrinking");
  if (Clock::now() < refill_not_before_) return ArmRefillTimer();
  // Containers beyond what may serve at once only compete for the CPU with those
  // serving: with every slot busy the pool keeps no more than `warm`.
  const size_t cap = options_.max_concurrency + options_.warm;
  // A container that fails at once sets a back-off and leaves the pool: stop then.
  for (size_t started = 0; pool_.size() + returning < target_ &&
                           pool_.size() + serving_.size() < cap && started < target_;
       ++started) {
    auto container = make_(UniqueFd());
    if (!container) return;
    pool_.push_back(container);
    container->Start();
    if (Clock::now() < refill_not_before_) return;
  }
}

void Scaler::ShrinkTo(size_t size, const char* why,
                      std::vector<std::shared_ptr<Container>>* stopped) {
  while (pool_.size() > size) {
    std::shared_ptr<Container> container = pool_.back();  // the newest: likely still starting
    pool_.pop_back();
    if (stopped != nullptr) stopped->push_back(container);
    container->Kill(why);
  }
}

void Scaler::Tick() {
  if (stopped_ || target_ == 0) return;
  auto now = Clock::now();
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

std::vector<std::shared_ptr<Container>> Scaler::Reload(store::ScalingOptions options) {
  options_ = options;
  std::vector<std::shared_ptr<Container>> stopped;
  ShrinkTo(0, "redeployed", &stopped);
  retiring_ = serving_;
  target_ = options_.warm == 0
                ? 0
                : std::clamp(std::max(target_, options_.warm), options_.warm, options_.warm_max);
  last_client_ = Clock::now();
  failures_in_row_ = 0;
  refill_not_before_ = {};
  refill_timer_.cancel();
  DrainQueue();
  Refill();
  return stopped;
}

void Scaler::Stop() {
  stopped_ = true;
  ShrinkTo(0, "stopped");
  for (auto& queued : queue_) Reject503(std::move(queued.client));
  queue_.clear();
  queue_timer_.cancel();
  refill_timer_.cancel();
}

void Scaler::ArmQueueTimer() {
  if (queue_.empty()) {
    queue_timer_.cancel();
    return;
  }
  queue_timer_.expires_at(queue_.front().deadline);
  queue_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) OnQueueTimer();
  });
}

void Scaler::OnQueueTimer() {
  auto now = Clock::now();
  while (!queue_.empty() && queue_.front().deadline <= now) {
    Reject503(std::move(queue_.front().client));
    queue_.pop_front();
  }
  ArmQueueTimer();
}

void Scaler::ArmRefillTimer() {
  refill_timer_.expires_at(refill_not_before_);
  refill_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) Refill();
  });
}

size_t Scaler::CountReady() const {
  return static_cast<size_t>(
      std::count_if(pool_.begin(), pool_.end(), [](const auto& c) { return c->ready(); }));
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
