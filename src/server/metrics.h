// faasd's Prometheus metrics: a Telemetry sink that counts what the request path
// and the deploys report, plus figures read from the live objects at each scrape.
//
// Counted from the records (series per function, label `function`):
//   faasd_function_invocations_total{outcome}  every client, by Outcome (OutcomeName)
//   faasd_function_duration_seconds            histogram; clients faasd did not reject
//   faasd_function_queue_wait_seconds          histogram; clients past the rate limit
//   faasd_function_starts_total{kind}          cold or warm, per client given a container
// and daemon-wide faasd_deploys_total{outcome}, faasd_deploy_import_duration_seconds,
// faasd_build_info{version}. Read at each scrape (ScrapeSources): per function
// faasd_function_pool_ready, _pool_starting, _active_requests and
// _log_lines_dropped_total; faasd_functions_deployed, faasd_containers_running,
// faasd_open_fds, and the layer cache's faasd_layer_cache_bytes, _limit_bytes, _blobs,
// _hits_total, _misses_total and _evictions_total.
//
// A function's series are created with all their label values at 0 when it is
// first seen (a deploy or a request), and removed by OnRemoved; a scrape also drops
// the series of any function it does not find deployed, so nothing reported late
// about a removed function lingers.
//
// Lives on the event loop thread, like Telemetry; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/telemetry.h"

namespace prometheus {
class Counter;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace faas::server {

// One deployed function's load at the moment of a scrape.
struct FunctionLoad {
  std::string name;
  uint64_t pool_ready = 0;     // started containers waiting in its pool for a client
  uint64_t pool_starting = 0;  // pooled containers still starting
  uint64_t active = 0;         // containers serving a client
};

// Where a scrape reads the live figures. Each may be empty: its metrics are then
// left out (a unit test gives only what it checks).
// The pulled layers' cache (pull::BlobCache::Counters and its bound).
struct LayerCacheStats {
  uint64_t bytes = 0;
  uint64_t limit_bytes = 0;
  uint64_t blobs = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

struct ScrapeSources {
  std::function<std::vector<FunctionLoad>()> functions;  // the deployed functions, now
  std::function<uint64_t()> containers_running;          // every container faasd owns
  // Lines the function log store dropped for a function (0: none, or unknown).
  std::function<uint64_t(const std::string&)> dropped_lines;
  std::function<LayerCacheStats()> layer_cache;  // none: no cache
};

class Metrics final : public Telemetry {
 public:
  explicit Metrics(ScrapeSources sources = {});
  ~Metrics() override;

  void OnRequest(const RequestRecord& record) override;
  void OnDeploy(const DeployRecord& record) override;
  void OnRemoved(const std::string& function) override;

  // Sets the scrape sources (the objects they read may not exist yet when the sink
  // is made: the daemon sets them once they do).
  void SetSources(ScrapeSources sources) { sources_ = std::move(sources); }

  // The exposition in the Prometheus text format 0.0.4 (api::kMetricsContentType), read
  // now.
  std::string Render();

 private:
  struct FunctionSeries;

  FunctionSeries& SeriesOf(const std::string& function);
  void Prune(const std::vector<FunctionLoad>& deployed);

  ScrapeSources sources_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& invocations_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Counter>& starts_;
  prometheus::Family<prometheus::Counter>& deploys_;
  prometheus::Histogram& import_duration_;
  std::map<std::string, FunctionSeries> series_;
};

// The number of fds this process has open (entries of /proc/self/fd), or 0 when
// it cannot be read.
uint64_t CountOpenFds();

}  // namespace faas::server
