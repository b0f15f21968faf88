#include "server/metrics.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "common/fd.h"
#include "common/version.h"

namespace faas::server {
namespace {

using std::chrono::microseconds;

// The samples of an exposition: "name{labels}" -> value (comments skipped).
std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

bool HasSeriesOf(const std::map<std::string, double>& samples, const std::string& function) {
  const std::string label = "function=\"" + function + "\"";
  for (const auto& [series, value] : samples)
    if (series.find(label) != std::string::npos) return true;
  return false;
}

RequestRecord Request(const std::string& function, Outcome outcome, StartKind start,
                      microseconds duration, microseconds queue_wait = microseconds(0)) {
  RequestRecord record;
  record.function = function;
  record.outcome = outcome;
  record.start = start;
  record.duration = duration;
  record.queue_wait = queue_wait;
  return record;
}

std::string Invocations(const std::string& function, const char* outcome) {
  return "faasd_function_invocations_total{function=\"" + function + "\",outcome=\"" + outcome +
         "\"}";
}

std::string Bucket(const char* name, const std::string& function, const char* le) {
  return std::string(name) + "_bucket{function=\"" + function + "\",le=\"" + le + "\"}";
}

TEST(Metrics, BuildInfoAndDeployOutcomesBeforeAnyRecord) {
  Metrics metrics;
  auto samples = Samples(metrics.Render());
  EXPECT_EQ(samples[std::string("faasd_build_info{version=\"") + kVersion + "\"}"], 1);
  for (const char* outcome : {"ok", "bad_image", "start_failed", "conflict", "cancelled", "failed"})
    EXPECT_EQ(samples.count(std::string("faasd_deploys_total{outcome=\"") + outcome + "\"}"), 1u)
        << outcome;
  EXPECT_GT(samples["faasd_open_fds"], 0);
  EXPECT_EQ(samples.count("faasd_functions_deployed"), 0u);  // no source given
}

TEST(Metrics, EveryOutcomeOfAFunctionIsASeriesFromItsFirstRequest) {
  Metrics metrics;
  metrics.OnRequest(Request("web", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  metrics.OnRequest(Request("web", Outcome::kOk, StartKind::kWarm, microseconds(700)));
  metrics.OnRequest(Request("web", Outcome::kHandlerError, StartKind::kWarm, microseconds(900)));
  metrics.OnRequest(Request("web", Outcome::kRejectedRate, StartKind::kNone, microseconds(10)));
  auto samples = Samples(metrics.Render());
  EXPECT_EQ(samples[Invocations("web", "ok")], 2);
  EXPECT_EQ(samples[Invocations("web", "handler_error")], 1);
  EXPECT_EQ(samples[Invocations("web", "rejected_rate")], 1);
  for (const char* outcome : {"timeout", "rejected_queue", "runtime_error"}) {
    ASSERT_EQ(samples.count(Invocations("web", outcome)), 1u) << outcome;
    EXPECT_EQ(samples[Invocations("web", outcome)], 0) << outcome;
  }
  EXPECT_EQ(samples["faasd_function_starts_total{function=\"web\",kind=\"cold\"}"], 1);
  EXPECT_EQ(samples["faasd_function_starts_total{function=\"web\",kind=\"warm\"}"], 2);
}

TEST(Metrics, DurationHistogramHasTheBucketsFromHalfAMillisecondTo30s) {
  Metrics metrics;
  metrics.OnRequest(Request("web", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  metrics.OnRequest(Request("web", Outcome::kTimeout, StartKind::kCold, microseconds(12'000'000)));
  auto samples = Samples(metrics.Render());
  const char* name = "faasd_function_duration_seconds";
  const std::map<const char*, double> expected = {
      {"0.0005", 0}, {"0.001", 0}, {"0.0025", 0}, {"0.005", 1}, {"0.01", 1}, {"0.025", 1},
      {"0.05", 1},   {"0.1", 1},   {"0.25", 1},   {"0.5", 1},   {"1", 1},    {"2.5", 1},
      {"5", 1},      {"10", 1},    {"30", 2},     {"+Inf", 2}};
  for (const auto& [le, count] : expected) {
    ASSERT_EQ(samples.count(Bucket(name, "web", le)), 1u) << le;
    EXPECT_EQ(samples[Bucket(name, "web", le)], count) << le;
  }
  EXPECT_EQ(samples["faasd_function_duration_seconds_count{function=\"web\"}"], 2);
  EXPECT_DOUBLE_EQ(samples["faasd_function_duration_seconds_sum{function=\"web\"}"], 12.003);
}

TEST(Metrics, RejectionsStayOutOfTheDurationAndRateLimitedOnesOutOfTheQueueWait) {
  Metrics metrics;
  metrics.OnRequest(
      Request("web", Outcome::kOk, StartKind::kWarm, microseconds(2000), microseconds(40'000)));
  metrics.OnRequest(Request("web", Outcome::kRejectedQueue, StartKind::kNone, microseconds(50),
                            microseconds(20'000)));
  metrics.OnRequest(Request("web", Outcome::kRejectedRate, StartKind::kNone, microseconds(50)));
  auto samples = Samples(metrics.Render());
  EXPECT_EQ(samples["faasd_function_duration_seconds_count{function=\"web\"}"], 1);
  EXPECT_EQ(samples["faasd_function_queue_wait_seconds_count{function=\"web\"}"], 2);
  EXPECT_DOUBLE_EQ(samples["faasd_function_queue_wait_seconds_sum{function=\"web\"}"], 0.06);
  EXPECT_EQ(samples[Bucket("faasd_function_queue_wait_seconds", "web", "0.025")], 1);
  EXPECT_EQ(samples[Bucket("faasd_function_queue_wait_seconds", "web", "0.05")], 2);
}

TEST(Metrics, DeploysAreCountedByOutcomeAndTheirImportTimed) {
  Metrics metrics;
  metrics.OnDeploy({.function = "web",
                    .outcome = DeployOutcome::kOk,
                    .version = 1,
                    .import = microseconds(300'000),
                    .total = microseconds(400'000)});
  metrics.OnDeploy({.function = "bad", .outcome = DeployOutcome::kBadImage});
  auto samples = Samples(metrics.Render());
  EXPECT_EQ(samples["faasd_deploys_total{outcome=\"ok\"}"], 1);
  EXPECT_EQ(samples["faasd_deploys_total{outcome=\"bad_image\"}"], 1);
  EXPECT_EQ(samples["faasd_deploys_total{outcome=\"failed\"}"], 0);
  EXPECT_EQ(samples["faasd_deploy_import_duration_seconds_count"], 1);
  EXPECT_EQ(samples["faasd_deploy_import_duration_seconds_bucket{le=\"0.25\"}"], 0);
  EXPECT_EQ(samples["faasd_deploy_import_duration_seconds_bucket{le=\"0.5\"}"], 1);
  // A deployed function has its series before its first request; a refused one none.
  EXPECT_EQ(samples[Invocations("web", "ok")], 0);
  EXPECT_FALSE(HasSeriesOf(samples, "bad"));
}

TEST(Metrics, RemovingAFunctionDropsItsSeriesAndKeepsTheOthers) {
  Metrics metrics;
  metrics.OnRequest(Request("web", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  metrics.OnRequest(Request("api", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  metrics.OnRemoved("web");
  metrics.OnRemoved("never-seen");
  auto samples = Samples(metrics.Render());
  EXPECT_FALSE(HasSeriesOf(samples, "web"));
  EXPECT_EQ(samples[Invocations("api", "ok")], 1);
  // Deployed again under the same name, it starts from 0.
  metrics.OnRequest(Request("web", Outcome::kHandlerError, StartKind::kCold, microseconds(3000)));
  samples = Samples(metrics.Render());
  EXPECT_EQ(samples[Invocations("web", "ok")], 0);
  EXPECT_EQ(samples[Invocations("web", "handler_error")], 1);
}

TEST(Metrics, ScrapeReadsTheLiveFiguresAndDropsFunctionsNoLongerDeployed) {
  std::vector<FunctionLoad> deployed = {
      {.name = "web", .pool_ready = 2, .pool_starting = 1, .active = 3},
      {.name = "api", .pool_ready = 0, .pool_starting = 0, .active = 1}};
  Metrics metrics(
      {.functions = [&] { return deployed; },
       .containers_running = [] { return uint64_t{7}; },
       .dropped_lines =
           [](const std::string& name) { return name == "web" ? uint64_t{12} : uint64_t{0}; },
       .layer_cache =
           [] {
             return LayerCacheStats{.bytes = 300,
                                    .limit_bytes = 1000,
                                    .blobs = 2,
                                    .hits = 5,
                                    .misses = 4,
                                    .evictions = 1};
           }});
  metrics.OnRequest(Request("old", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  auto samples = Samples(metrics.Render());
  EXPECT_EQ(samples["faasd_layer_cache_bytes"], 300);
  EXPECT_EQ(samples["faasd_layer_cache_limit_bytes"], 1000);
  EXPECT_EQ(samples["faasd_layer_cache_blobs"], 2);
  EXPECT_EQ(samples["faasd_layer_cache_hits_total"], 5);
  EXPECT_EQ(samples["faasd_layer_cache_misses_total"], 4);
  EXPECT_EQ(samples["faasd_layer_cache_evictions_total"], 1);
  EXPECT_EQ(samples["faasd_functions_deployed"], 2);
  EXPECT_EQ(samples["faasd_containers_running"], 7);
  EXPECT_EQ(samples["faasd_function_pool_ready{function=\"web\"}"], 2);
  EXPECT_EQ(samples["faasd_function_pool_starting{function=\"web\"}"], 1);
  EXPECT_EQ(samples["faasd_function_active_requests{function=\"web\"}"], 3);
  EXPECT_EQ(samples["faasd_function_active_requests{function=\"api\"}"], 1);
  EXPECT_EQ(samples["faasd_function_log_lines_dropped_total{function=\"web\"}"], 12);
  EXPECT_EQ(samples["faasd_function_log_lines_dropped_total{function=\"api\"}"], 0);
  EXPECT_FALSE(HasSeriesOf(samples, "old"));  // removed while its request ran
  deployed.pop_back();
  samples = Samples(metrics.Render());
  EXPECT_EQ(samples["faasd_functions_deployed"], 1);
  EXPECT_FALSE(HasSeriesOf(samples, "api"));
}

TEST(Metrics, TypesAreDeclared) {
  ScrapeSources sources;
  sources.functions = [] { return std::vector<FunctionLoad>{{.name = "web"}}; };
  Metrics metrics(std::move(sources));
  metrics.OnRequest(Request("web", Outcome::kOk, StartKind::kCold, microseconds(3000)));
  const std::string text = metrics.Render();
  for (const char* line :
       {"# TYPE faasd_function_invocations_total counter",
        "# TYPE faasd_function_duration_seconds histogram",
        "# TYPE faasd_function_pool_ready gauge", "# TYPE faasd_functions_deployed gauge"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

TEST(Metrics, CountOpenFdsSeesAnFdOpenedAndClosed) {
  const uint64_t before = CountOpenFds();
  {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    EXPECT_EQ(CountOpenFds(), before + 1);
  }
  EXPECT_EQ(CountOpenFds(), before);
}

}  // namespace
}  // namespace faas::server
