#include "server/metrics.h"

#include <dirent.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <set>

#include "common/version.h"

namespace faas::server {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// From a cached warm start (half a millisecond) to the default run timeout.
const prometheus::Histogram::BucketBoundaries kRequestBuckets = {
    .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30};
// Imports take from a fraction of a second (a small image) to minutes.
const prometheus::Histogram::BucketBoundaries kImportBuckets = {.1, .25, .5, 1,   2.5, 5,
                                                                10, 30,  60, 120, 300};

constexpr std::array kOutcomes = {Outcome::kOk,           Outcome::kHandlerError,
                                  Outcome::kTimeout,      Outcome::kRejectedQueue,
                                  Outcome::kRejectedRate, Outcome::kRuntimeError};
constexpr std::array kDeployOutcomes = {DeployOutcome::kOk,          DeployOutcome::kBadImage,
                                        DeployOutcome::kStartFailed, DeployOutcome::kConflict,
                                        DeployOutcome::kCancelled,   DeployOutcome::kFailed};

// FunctionSeries::invocations is indexed by the Outcome's value.
constexpr bool OutcomesInEnumOrder() {
  for (size_t i = 0; i < kOutcomes.size(); ++i)
    if (static_cast<size_t>(kOutcomes[i]) != i) return false;
  return true;
}
static_assert(OutcomesInEnumOrder());

double Seconds(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1e6; }

bool Rejected(Outcome outcome) {
  return outcome == Outcome::kRejectedQueue || outcome == Outcome::kRejectedRate;
}

// A family read at scrape time (its values are not kept between scrapes).
MetricFamily ScrapeFamily(const char* name, const char* help, MetricType type) {
  return MetricFamily{.name = name, .help = help, .type = type, .metric = {}};
}

void AddValue(MetricFamily& family, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

void AppendLayerCache(const LayerCacheStats& cache, std::vector<MetricFamily>& out) {
  const struct {
    const char* name;
    const char* help;
    MetricType type;
    uint64_t value;
  } figures[] = {
      {"faasd_layer_cache_bytes", "Bytes of pulled layers kept in the layer cache",
       MetricType::Gauge, cache.bytes},
      {"faasd_layer_cache_limit_bytes", "The layer cache's bound (--cache-size)", MetricType::Gauge,
       cache.limit_bytes},
      {"faasd_layer_cache_blobs", "Layers kept in the layer cache", MetricType::Gauge, cache.blobs},
      {"faasd_layer_cache_hits_total", "Layers a pull found in the cache", MetricType::Counter,
       cache.hits},
      {"faasd_layer_cache_misses_total", "Layers a pull had to download", MetricType::Counter,
       cache.misses},
      {"faasd_layer_cache_evictions_total", "Layers removed to keep the cache in its bound",
       MetricType::Counter, cache.evictions},
  };
  for (const auto& figure : figures) {
    auto family = ScrapeFamily(figure.name, figure.help, figure.type);
    AddValue(family, static_cast<double>(figure.value));
    out.push_back(std::move(family));
  }
}

// The per-function gauges of a scrape, and the count of functions.
void AppendLoads(const std::vector<FunctionLoad>& deployed,
                 const std::function<uint64_t(const std::string&)>& dropped_lines,
                 std::vector<MetricFamily>& out) {
  auto count = ScrapeFamily("faasd_functions_deployed", "Functions deployed", MetricType::Gauge);
  AddValue(count, static_cast<double>(deployed.size()));
  auto ready = ScrapeFamily("faasd_function_pool_ready",
                            "Started containers waiting in the function's pool for a client",
                            MetricType::Gauge);
  auto starting =
      ScrapeFamily("faasd_function_pool_starting",
                   "Pooled containers of the function still starting", MetricType::Gauge);
  auto active = ScrapeFamily("faasd_function_active_requests",
                             "Containers of the function serving a client", MetricType::Gauge);
  auto dropped =
      ScrapeFamily("faasd_function_log_lines_dropped_total",
                   "Handler output lines the function's log dropped", MetricType::Counter);
  for (const auto& load : deployed) {
    const std::vector<ClientMetric::Label> labels = {{"function", load.name}};
    AddValue(ready, static_cast<double>(load.pool_ready), labels);
    AddValue(starting, static_cast<double>(load.pool_starting), labels);
    AddValue(active, static_cast<double>(load.active), labels);
    if (dropped_lines) AddValue(dropped, static_cast<double>(dropped_lines(load.name)), labels);
  }
  for (auto* family : {&count, &ready, &starting, &active}) out.push_back(std::move(*family));
  if (dropped_lines) out.push_back(std::move(dropped));
}

}  // namespace

struct Metrics::FunctionSeries {
  std::array<prometheus::Counter*, kOutcomes.size()> invocations{};
  prometheus::Histogram* duration = nullptr;
  prometheus::Histogram* queue_wait = nullptr;
  prometheus::Counter* cold = nullptr;
  prometheus::Counter* warm = nullptr;
};

Metrics::Metrics(ScrapeSources sources)
    : sources_(std::move(sources)),
      registry_(std::make_shared<prometheus::Registry>()),
      invocations_(prometheus::BuildCounter()
                       .Name("faasd_function_invocations_total")
                       .Help("Client connections to a function, by how they ended")
                       .Register(*registry_)),
      duration_(prometheus::BuildHistogram()
                    .Name("faasd_function_duration_seconds")
                    .Help("From accepting a client to the end of the handler's work on it "
                          "(requests faasd did not reject)")
                    .Register(*registry_)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("faasd_function_queue_wait_seconds")
                      .Help("Time clients waited in the function's admission queue "
                            "(clients past the rate limit)")
                      .Register(*registry_)),
      starts_(prometheus::BuildCounter()
                  .Name("faasd_function_starts_total")
                  .Help("Clients given a container: cold (started for it) or warm (pooled)")
                  .Register(*registry_)),
      deploys_(prometheus::BuildCounter()
                   .Name("faasd_deploys_total")
                   .Help("Deploys, by outcome")
                   .Register(*registry_)),
      import_duration_(prometheus::BuildHistogram()
                           .Name("faasd_deploy_import_duration_seconds")
                           .Help("Reading and unpacking a deploy's image")
                           .Register(*registry_)
                           .Add({}, kImportBuckets)) {
  for (DeployOutcome outcome : kDeployOutcomes)
    deploys_.Add({{"outcome", DeployOutcomeName(outcome)}});
  prometheus::BuildGauge()
      .Name("faasd_build_info")
      .Help("faasd's release, as the label version; always 1")
      .Register(*registry_)
      .Add({{"version", kVersion}})
      .Set(1);
}

Metrics::~Metrics() = default;

Metrics::FunctionSeries& Metrics::SeriesOf(const std::string& function) {
  auto [it, added] = series_.try_emplace(function);
  if (!added) return it->second;
  FunctionSeries& series = it->second;
  for (size_t i = 0; i < kOutcomes.size(); ++i)
    series.invocations[i] =
        &invocations_.Add({{"function", function}, {"outcome", OutcomeName(kOutcomes[i])}});
  series.duration = &duration_.Add({{"function", function}}, kRequestBuckets);
  series.queue_wait = &queue_wait_.Add({{"function", function}}, kRequestBuckets);
  series.cold = &starts_.Add({{"function", function}, {"kind", StartKindName(StartKind::kCold)}});
  series.warm = &starts_.Add({{"function", function}, {"kind", StartKindName(StartKind::kWarm)}});
  return series;
}

void Metrics::OnRequest(const RequestRecord& record) {
  FunctionSeries& series = SeriesOf(record.function);
  series.invocations[static_cast<size_t>(record.outcome)]->Increment();
  if (!Rejected(record.outcome)) series.duration->Observe(Seconds(record.duration));
  if (record.outcome != Outcome::kRejectedRate)
    series.queue_wait->Observe(Seconds(record.queue_wait));
  if (record.start == StartKind::kCold) series.cold->Increment();
  if (record.start == StartKind::kWarm) series.warm->Increment();
}

void Metrics::OnDeploy(const DeployRecord& record) {
  deploys_.Add({{"outcome", DeployOutcomeName(record.outcome)}}).Increment();
  if (record.import.count() > 0) import_duration_.Observe(Seconds(record.import));
  if (record.outcome == DeployOutcome::kOk) SeriesOf(record.function);
}

void Metrics::OnRemoved(const std::string& function) {
  auto it = series_.find(function);
  if (it == series_.end()) return;
  FunctionSeries& series = it->second;
  for (prometheus::Counter* counter : series.invocations) invocations_.Remove(counter);
  duration_.Remove(series.duration);
  queue_wait_.Remove(series.queue_wait);
  starts_.Remove(series.cold);
  starts_.Remove(series.warm);
  series_.erase(it);
}

void Metrics::Prune(const std::vector<FunctionLoad>& deployed) {
  std::set<std::string> names;
  for (const auto& load : deployed) names.insert(load.name);
  std::vector<std::string> gone;
  for (const auto& [name, series] : series_)
    if (!names.contains(name)) gone.push_back(name);
  for (const auto& name : gone) OnRemoved(name);
}

std::string Metrics::Render() {
  std::vector<FunctionLoad> deployed;
  if (sources_.functions) {
    deployed = sources_.functions();
    Prune(deployed);
  }
  std::vector<MetricFamily> families = registry_->Collect();
  if (sources_.functions) AppendLoads(deployed, sources_.dropped_lines, families);
  if (sources_.containers_running) {
    auto running =
        ScrapeFamily("faasd_containers_running",
                     "Containers faasd owns: pooled, serving or finishing", MetricType::Gauge);
    AddValue(running, static_cast<double>(sources_.containers_running()));
    families.push_back(std::move(running));
  }
  auto fds = ScrapeFamily("faasd_open_fds", "File descriptors faasd has open", MetricType::Gauge);
  AddValue(fds, static_cast<double>(CountOpenFds()));
  families.push_back(std::move(fds));
  if (sources_.layer_cache) AppendLayerCache(sources_.layer_cache(), families);
  return prometheus::TextSerializer().Serialize(families);
}

uint64_t CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return 0;
  uint64_t count = 0;
  const std::string own = std::to_string(::dirfd(dir));
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != ".." && name != own) ++count;
  }
  ::closedir(dir);
  return count;
}

}  // namespace faas::server
