// The scaler's rules over fake containers and a fake clock: no root, no runtime.
#include "server/scaler.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

#include "fake_clock.h"

namespace faas::server {
namespace {

using std::chrono::milliseconds;

// A container whose life the test drives: Connect() makes it ready, Finish() ends it.
class FakeContainer final : public Instance {
 public:
  explicit FakeContainer(Client client, Events events)
      : client_(std::move(client)), events_(std::move(events)), uses_(client_ ? 1 : 0) {}
  void Start() override { started = true; }
  bool Attach(Client& client) override {
    if (killed || ended) return false;
    client_ = std::move(client);
    ++uses_;
    return true;
  }
  void Kill(const char* /*why*/) override { killed = true; }
  void SetEvents(Events events) override { events_ = std::move(events); }
  bool ready() const override { return connected && !client_ && !killed; }
  bool served() const override { return uses_ > 0; }
  bool may_serve_again() const override { return reusable; }

  void Connect() { connected = true; }
  // A reusable container done with its client connects again for the next one.
  void Idle() {
    client_.fd.Reset();
    auto idle = events_.idle;
    idle(this);
  }
  // Cleanup done: the scaler hears of it (and may drop its last reference).
  void Finish() {
    ended = true;
    auto done = events_.done;
    done(this);
  }
  bool has_client() const { return static_cast<bool>(client_); }
  const Client& client() const { return client_; }

  bool started = false, connected = false, killed = false, ended = false, reusable = false;

 private:
  Client client_;
  Events events_;
  int uses_;
};

class RecordingTelemetry final : public Telemetry {
 public:
  void OnRequest(const RequestRecord& record) override { requests.push_back(record); }
  std::vector<RequestRecord> requests;
};

class ScalerTest : public ::testing::Test {
 protected:
  void Make(store::ScalingOptions options) {
    scaler_ = std::make_unique<Scaler>(
        clock_, rejector_, telemetry_, "fn", options,
        [this](server::Client client, Instance::Events events) {
          auto c = std::make_shared<FakeContainer>(std::move(client), std::move(events));
          made_.push_back(c);
          return c;
        },
        [this] { ++gone_; });
  }

  static store::ScalingOptions Options() {
    store::ScalingOptions options;
    options.warm = 0;
    options.warm_max = 0;
    options.max_concurrency = 4;
    return options;
  }
  // Options() with a pool of one.
  static store::ScalingOptions WarmOne() {
    auto options = Options();
    options.warm = 1;
    options.warm_max = 1;
    return options;
  }

  // A client connection: the scaler gets one end, the test keeps the other. The
  // i-th client's peer is "192.0.2.1:i".
  server::Client Client() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    peers_.emplace_back(fds[1]);
    return {.fd = UniqueFd(fds[0]), .peer = "192.0.2.1:" + std::to_string(peers_.size() - 1)};
  }
  // What faasd answered the i-th client itself ("" if nothing yet).
  std::string Answer(size_t i) {
    char buf[512];
    ssize_t n = ::recv(peers_.at(i).get(), buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  FakeContainer& Made(size_t i) {
    auto c = made_.at(i).lock();
    EXPECT_TRUE(c) << "container " << i << " is gone";
    return *c;
  }
  size_t Alive() const {
    return static_cast<size_t>(
        std::count_if(made_.begin(), made_.end(), [](const auto& w) { return !w.expired(); }));
  }

  boost::asio::io_context io_;
  FakeClock clock_;
  Rejector rejector_{io_};
  RecordingTelemetry telemetry_;
  std::unique_ptr<Scaler> scaler_;
  std::vector<std::weak_ptr<FakeContainer>> made_;
  std::vector<UniqueFd> peers_;
  int gone_ = 0;
};

TEST_F(ScalerTest, AClientWithoutAPoolGetsAContainerStartedForIt) {
  Make(Options());
  scaler_->OnClient(Client());
  ASSERT_EQ(made_.size(), 1u);
  EXPECT_TRUE(Made(0).started);
  EXPECT_TRUE(Made(0).has_client());
  EXPECT_EQ(scaler_->size(), 1u);
  EXPECT_TRUE(scaler_->serving_clients());
  Made(0).Finish();
  EXPECT_EQ(scaler_->size(), 0u);
  EXPECT_EQ(Alive(), 0u) << "the scaler owned the container; it is gone with it";
  EXPECT_EQ(gone_, 1);
}

// faasd's defaults ask for no pool: nothing starts ahead, before, between or after
// requests, whether they come one by one or at once, and misses grow no pool up to the
// default warm_max.
TEST_F(ScalerTest, DefaultsStartAContainerPerRequestAndNoneAhead) {
  const store::ScalingOptions defaults;
  ASSERT_EQ(defaults.warm, 0u);
  Make(defaults);
  scaler_->Refill();
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  EXPECT_EQ(made_.size(), 0u);
  for (size_t i = 0; i < 3; ++i) {
    scaler_->OnClient(Client());
    ASSERT_EQ(made_.size(), i + 1);
    EXPECT_TRUE(Made(i).has_client());
    Made(i).Connect();
    Made(i).Finish();
  }
  for (int i = 0; i < 4; ++i) scaler_->OnClient(Client());
  ASSERT_EQ(made_.size(), 7u) << "one container per concurrent client, none more";
  for (size_t i = 3; i < 7; ++i) EXPECT_TRUE(Made(i).has_client());
  EXPECT_EQ(scaler_->Stats()["pool_target"], 0);
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  for (size_t i = 3; i < 7; ++i) Made(i).Finish();
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  EXPECT_EQ(made_.size(), 7u);
  EXPECT_EQ(scaler_->size(), 0u);
  EXPECT_EQ(Alive(), 0u);
  EXPECT_EQ(scaler_->Stats()["cold_starts"], 7);
  EXPECT_EQ(scaler_->Stats()["pool_target"], 0);
}

// `faas new --warm 1` over faasd's defaults still gets its pool.
TEST_F(ScalerTest, AFunctionsOwnWarmGivesItAPoolOverTheDefaults) {
  auto deployed =
      store::ParseDeployOptions(R"({"warm":1})", store::FunctionLimits{}, store::ScalingOptions{});
  ASSERT_TRUE(deployed.ok());
  EXPECT_EQ(deployed->scaling.warm_max, store::ScalingOptions{}.warm_max);
  Make(deployed->scaling);
  scaler_->Refill();
  ASSERT_EQ(made_.size(), 1u);
  EXPECT_FALSE(Made(0).has_client()) << "started ahead, for the next client";
  EXPECT_EQ(scaler_->Stats()["pool_target"], 1);
}

// Without a pool, a reusable container serves the clients already waiting, but does not
// wait for new ones.
TEST_F(ScalerTest, WithoutAPoolAReusableContainerServesTheQueueThenStops) {
  auto options = Options();
  options.max_concurrency = 1;
  options.reuse = 5;
  Make(options);
  scaler_->OnClient(Client());
  scaler_->OnClient(Client());  // queued
  ASSERT_EQ(made_.size(), 1u);
  Made(0).reusable = true;
  Made(0).Connect();
  Made(0).Idle();
  EXPECT_TRUE(Made(0).has_client()) << "the queued client";
  EXPECT_FALSE(Made(0).killed);
  Made(0).Idle();
  EXPECT_TRUE(Made(0).killed) << "nobody waits: no pool keeps it";
  EXPECT_EQ(made_.size(), 1u);
}

TEST_F(ScalerTest, TokenBucketAllowsTheRateAndAnswers429Beyond) {
  auto options = Options();
  options.rate_limit = 2;  // a bucket of 2, refilled at 2 a second
  Make(options);
  scaler_->OnClient(Client());
  scaler_->OnClient(Client());
  scaler_->OnClient(Client());
  EXPECT_EQ(made_.size(), 2u);
  EXPECT_EQ(Answer(2).rfind("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n", 0), 0u);
  clock_.Advance(milliseconds(499));
  scaler_->OnClient(Client());
  EXPECT_EQ(made_.size(), 2u) << "not a whole token yet";
  clock_.Advance(milliseconds(1));
  scaler_->OnClient(Client());
  EXPECT_EQ(made_.size(), 3u);
  EXPECT_EQ(scaler_->Stats()["rejected_429"], 2);
  // The clients served are the containers' to report; the scaler reports its own answers.
  ASSERT_EQ(telemetry_.requests.size(), 2u);
  const RequestRecord& rejected = telemetry_.requests[0];
  EXPECT_EQ(rejected.function, "fn");
  EXPECT_EQ(rejected.client, "192.0.2.1:2");
  EXPECT_EQ(rejected.outcome, Outcome::kRejectedRate);
  EXPECT_EQ(rejected.answered, 429);
  EXPECT_EQ(rejected.start, StartKind::kNone);
  EXPECT_TRUE(rejected.container.empty());
  EXPECT_EQ(telemetry_.requests[1].client, "192.0.2.1:3");
}

TEST_F(ScalerTest, QueuedClientGets503AtItsDeadlineAndAFullQueue503AtOnce) {
  auto options = Options();
  options.max_concurrency = 1;
  options.queue = 1;
  options.queue_timeout_ms = 10000;
  Make(options);
  scaler_->OnClient(Client());  // served
  scaler_->OnClient(Client());  // queued
  scaler_->OnClient(Client());  // queue full
  EXPECT_EQ(made_.size(), 1u);
  EXPECT_EQ(Answer(2).rfind("HTTP/1.1 503", 0), 0u);
  EXPECT_EQ(scaler_->Stats()["queued"], 1);
  clock_.Advance(milliseconds(9999));
  EXPECT_EQ(Answer(1), "");
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(Answer(1).rfind("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n", 0), 0u);
  EXPECT_EQ(scaler_->Stats()["queued"], 0);
  EXPECT_EQ(scaler_->Stats()["rejected_503"], 2);
  ASSERT_EQ(telemetry_.requests.size(), 2u);
  EXPECT_EQ(telemetry_.requests[0].client, "192.0.2.1:2");  // the full queue's, at once
  EXPECT_EQ(telemetry_.requests[0].queue_wait.count(), 0);
  EXPECT_EQ(telemetry_.requests[1].client, "192.0.2.1:1");  // the queue timeout's
  EXPECT_EQ(telemetry_.requests[1].queue_wait, std::chrono::seconds(10));
  for (const auto& record : telemetry_.requests) {
    EXPECT_EQ(record.outcome, Outcome::kRejectedQueue);
    EXPECT_EQ(record.answered, 503);
  }
}

TEST_F(ScalerTest, QueuedClientGetsTheNextFreeSlot) {
  auto options = Options();
  options.max_concurrency = 1;
  Make(options);
  scaler_->OnClient(Client());
  scaler_->OnClient(Client());
  ASSERT_EQ(made_.size(), 1u);
  clock_.Advance(milliseconds(250));
  Made(0).Finish();
  ASSERT_EQ(made_.size(), 2u);
  EXPECT_TRUE(Made(1).has_client());
  EXPECT_EQ(Made(1).client().peer, "192.0.2.1:1");
  EXPECT_EQ(Made(1).client().queue_wait, milliseconds(250));
  EXPECT_EQ(Answer(1), "");
}

TEST_F(ScalerTest, PoolRefillsAndAReadyContainerTakesTheClient) {
  auto options = WarmOne();
  Make(options);
  scaler_->Refill();
  ASSERT_EQ(made_.size(), 1u);
  EXPECT_FALSE(Made(0).has_client());
  Made(0).Connect();
  scaler_->OnClient(Client());
  EXPECT_TRUE(Made(0).has_client());
  EXPECT_EQ(made_.size(), 2u) << "the pool refills at once";
  EXPECT_EQ(scaler_->Stats()["warm_starts"], 1);
  EXPECT_EQ(scaler_->Stats()["cold_starts"], 0);
}

TEST_F(ScalerTest, PooledContainersThatDieBackOffDoublingTheDelay) {
  auto options = WarmOne();
  Make(options);
  scaler_->Refill();
  Made(0).Finish();  // died before getting a client
  EXPECT_EQ(made_.size(), 1u);
  clock_.Advance(Scaler::kMinBackoff - milliseconds(1));
  EXPECT_EQ(made_.size(), 1u);
  clock_.Advance(milliseconds(1));
  ASSERT_EQ(made_.size(), 2u);
  Made(1).Finish();
  clock_.Advance(2 * Scaler::kMinBackoff - milliseconds(1));
  EXPECT_EQ(made_.size(), 2u);
  clock_.Advance(milliseconds(1));
  ASSERT_EQ(made_.size(), 3u);
  EXPECT_EQ(scaler_->Stats()["pool_failures"], 2);
  // A warm start resets the back-off.
  Made(2).Connect();
  scaler_->OnClient(Client());
  Made(3).Finish();
  clock_.Advance(Scaler::kMinBackoff);
  EXPECT_EQ(made_.size(), 5u);
}

TEST_F(ScalerTest, PoolGrowsOnMissesAndShrinksBackAfterQuietPeriods) {
  auto options = Options();
  options.warm = 1;
  options.warm_max = 3;
  Make(options);
  scaler_->Refill();
  scaler_->OnClient(Client());  // the pooled one is still starting: a miss
  EXPECT_EQ(scaler_->Stats()["pool_target"], 2);
  scaler_->OnClient(Client());
  EXPECT_EQ(scaler_->Stats()["pool_target"], 3);
  scaler_->OnClient(Client());
  EXPECT_EQ(scaler_->Stats()["pool_target"], 3) << "never past warm_max";
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();  // the period had misses: no change
  EXPECT_EQ(scaler_->Stats()["pool_target"], 3);
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  EXPECT_EQ(scaler_->Stats()["pool_target"], 2);
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  clock_.Advance(Scaler::kAdaptPeriod);
  scaler_->Tick();
  EXPECT_EQ(scaler_->Stats()["pool_target"], 1) << "never below warm";
}

TEST_F(ScalerTest, IdlePoolStopsAfterTheIdleTimeoutAndComesBackWithAClient) {
  auto options = Options();
  options.warm = 2;
  options.warm_max = 2;
  options.idle_timeout_ms = 60000;
  Make(options);
  scaler_->Refill();
  ASSERT_EQ(made_.size(), 2u);
  clock_.Advance(milliseconds(59999));
  scaler_->Tick();
  EXPECT_FALSE(Made(0).killed);
  clock_.Advance(milliseconds(1));
  scaler_->Tick();
  EXPECT_TRUE(Made(0).killed);
  EXPECT_TRUE(Made(1).killed);
  EXPECT_EQ(scaler_->Stats()["pool_target"], 0);
  Made(0).Finish();
  Made(1).Finish();
  EXPECT_EQ(made_.size(), 2u) << "stopped ones are not replaced, nor counted as failures";
  EXPECT_EQ(scaler_->Stats()["pool_failures"], 0);
  scaler_->OnClient(Client());
  EXPECT_EQ(scaler_->Stats()["pool_target"], 2);
  EXPECT_EQ(made_.size(), 5u) << "one for the client, two for the pool";
}

TEST_F(ScalerTest, RedeployStopsTheOldPoolAndTellsWhenItIsGone) {
  auto options = WarmOne();
  Make(options);
  scaler_->Refill();
  Made(0).Connect();
  scaler_->OnClient(Client());  // Made(0) serves, Made(1) pooled
  ASSERT_EQ(made_.size(), 2u);
  scaler_->Reload(options);
  EXPECT_TRUE(Made(1).killed);
  EXPECT_FALSE(Made(0).killed) << "a request in flight finishes on its version";
  ASSERT_EQ(made_.size(), 3u) << "the pool refills from the new version";
  bool gone = false;
  scaler_->AfterOldPoolGone([&] { gone = true; });
  EXPECT_FALSE(gone);
  Made(1).Finish();
  EXPECT_TRUE(gone);
  bool at_once = false;
  scaler_->AfterOldPoolGone([&] { at_once = true; });
  EXPECT_TRUE(at_once);
}

// A deploy's check container, ready, made outside the scaler.
std::shared_ptr<FakeContainer> CheckedContainer(bool* done_before_adoption) {
  auto c = std::make_shared<FakeContainer>(
      Client{},
      Instance::Events{.done = [done_before_adoption](Instance*) { *done_before_adoption = true; },
                       .idle = {},
                       .ready = {}});
  c->Start();
  c->Connect();
  return c;
}

TEST_F(ScalerTest, AdoptedContainerIsTheFirstPooledOneAndTakesTheFirstClient) {
  auto options = WarmOne();
  Make(options);
  bool wrong_events = false;
  auto checked = CheckedContainer(&wrong_events);
  scaler_->Adopt(checked);
  scaler_->Refill();
  EXPECT_TRUE(made_.empty()) << "the pool has its one container: nothing more started";
  EXPECT_FALSE(checked->killed);
  EXPECT_EQ(scaler_->size(), 1u);
  EXPECT_EQ(scaler_->Stats()["pool_ready"], 1u);
  scaler_->OnClient(Client());
  EXPECT_TRUE(checked->has_client());
  EXPECT_EQ(scaler_->Stats()["warm_starts"], 1u);
  checked->Finish();
  EXPECT_FALSE(wrong_events) << "its end is reported to the scaler";
  EXPECT_EQ(scaler_->size(), 1u) << "only the refill is left";
}

TEST_F(ScalerTest, AdoptedContainerWithoutAPoolIsStoppedAndTheAnswerWaitsForIt) {
  Make(Options());
  bool wrong_events = false;
  auto checked = CheckedContainer(&wrong_events);
  scaler_->Adopt(checked);
  scaler_->Refill();
  EXPECT_TRUE(checked->killed);
  EXPECT_TRUE(made_.empty());
  bool gone = false;
  scaler_->AfterOldPoolGone([&] { gone = true; });
  EXPECT_FALSE(gone);
  checked->Finish();
  EXPECT_TRUE(gone);
  EXPECT_FALSE(wrong_events);
  EXPECT_EQ(scaler_->size(), 0u);
}

TEST_F(ScalerTest, RedeployWithAnAdoptedContainerPoolsItInsteadOfStartingOne) {
  auto options = WarmOne();
  Make(options);
  scaler_->Refill();
  ASSERT_EQ(made_.size(), 1u);
  bool wrong_events = false;
  auto checked = CheckedContainer(&wrong_events);
  scaler_->Reload(options, checked);
  EXPECT_TRUE(Made(0).killed) << "the old version's pooled container is stopped";
  EXPECT_EQ(made_.size(), 1u) << "the adopted one fills the new pool";
  EXPECT_FALSE(checked->killed);
  scaler_->OnClient(Client());
  EXPECT_TRUE(checked->has_client());
}

TEST_F(ScalerTest, StopAnswersQueuedClients503AndStartsNothingMore) {
  auto options = Options();
  options.max_concurrency = 1;
  Make(options);
  scaler_->OnClient(Client());
  scaler_->OnClient(Client());
  scaler_->Stop();
  EXPECT_EQ(Answer(1).rfind("HTTP/1.1 503", 0), 0u);
  EXPECT_TRUE(scaler_->serving_clients());
  Made(0).Finish();
  EXPECT_EQ(made_.size(), 1u);
  EXPECT_EQ(scaler_->size(), 0u);
}

}  // namespace
}  // namespace faas::server
