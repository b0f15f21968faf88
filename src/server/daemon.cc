#include "server/daemon.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>

#include "common/file.h"
#include "common/log.h"
#include "common/version.h"
#include "logs/function_log.h"
#include "logs/query.h"
#include "pull/blob_cache.h"
#include "runtime/bundle.h"
#include "server/cluster_sync.h"
#include "server/deploy.h"
#include "server/metrics.h"
#include "server/notify.h"
#include "server/publisher.h"

namespace faas::server {

namespace asio = boost::asio;

namespace {

Result<std::string> ReadToken(const std::string& path) {
  if (path.empty()) return std::string();
  FAAS_ASSIGN_OR_RETURN(std::string token, ReadFile(path, 4096));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.empty()) return MakeError(Errc::kInvalidArgument, "token file " + path + " is empty");
  return token;
}

// One version of a function as `faas versions` shows it: its record without what
// every version shares (name, address, rootfs link).
nlohmann::json VersionJson(const store::FunctionRecord& record, bool serving) {
  nlohmann::json out = store::ToJson(record);
  out.erase("ip");
  out.erase("rootfs");
  out["serving"] = serving;
  return out;
}

// What a scrape reads of the deployed functions (Scaler::Stats).
std::vector<FunctionLoad> FunctionLoads(const Functions& functions) {
  std::vector<FunctionLoad> loads;
  for (const auto& [name, record] : functions.registry().functions()) {
    auto stats = functions.RuntimeStats(name);
    if (!stats.ok()) continue;
    loads.push_back({.name = name,
                     .pool_ready = stats->value("pool_ready", uint64_t{0}),
                     .pool_starting = stats->value("pool_starting", uint64_t{0}),
                     .active = stats->value("active", uint64_t{0})});
  }
  return loads;
}

std::string AbsolutePath(const std::string& path) {
  std::string absolute = std::filesystem::absolute(path).lexically_normal().string();
  if (absolute.size() > 1 && absolute.back() == '/') absolute.pop_back();
  return absolute;
}

// Removes a retired rootfs, then its function directory if that is now empty, then
// the layers no version uses any more.
void RemoveRetired(const std::string& path, image::LayerStore* layers,
                   const store::StateDir& state) {
  if (auto st = RemoveTree(path); !st.ok()) spdlog::warn("remove {}: {}", path, st.error().message);
  ::rmdir(std::filesystem::path(path).parent_path().c_str());
  if (layers != nullptr) CollectLayers(*layers, state);  // none yet: collected at start
}

}  // namespace

class Daemon::Impl : public api::Backend {
 public:
  explicit Impl(DaemonOptions options)
      : options_(std::move(options)),
        state_(AbsolutePath(options_.state_dir),
               options_.userns ? std::optional<gid_t>(options_.userns_base) : std::nullopt),
        pool_(static_cast<size_t>(options_.workers)),
        signals_(io_, SIGTERM, SIGINT),
        notifier_(io_, [this] { return ServiceStatus(); }) {
    telemetry_.Add(&metrics_);
  }

  int Run() {
    ::signal(SIGPIPE, SIG_IGN);
    if (auto st = LockDirs(); !st.ok()) {
      std::cerr << "Error: " << st.error().message << "\n";
      return 1;
    }
    if (auto st = Start(); !st.ok()) {
      spdlog::critical("cannot start: {}", st.error().message);
      return 1;
    }
    signals_.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      notifier_.Stopping();
      api_->Stop();
      publisher_->Stop();
      auto drain = [this] {
        // Leaving the cluster (its lease revoked) must not hold the loop that drains.
        if (node_) {
          asio::post(pool_, [this] {
            watcher_->Stop();
            node_->Stop();
          });
        }
        functions_->Shutdown(options_.drain_timeout, [this] { io_.stop(); });
      };
      // A cluster node withdraws its routes first: new connections go to the others
      // while the ones here finish.
      if (sync_) return sync_->Withdraw(drain);
      drain();
    });
    spdlog::info("faasd ready");
    notifier_.Ready();
    RunLoop();
    pool_.join();
    spdlog::info("faasd stopped");
    return 0;
  }

  Result<UniqueFd> StartDeploy(const std::string& name, const std::string& options_header,
                               std::shared_ptr<const api::DeployCancel> cancel,
                               DeployDone done) override {
    if (sync_)
      return sync_->Deploy(name, options_header, std::move(cancel), ThenStatus(std::move(done)));
    return deployer_->Start(name, options_header, std::move(cancel), ThenStatus(std::move(done)));
  }

  Status StartPush(const std::string& name, const std::string& image,
                   std::optional<uint64_t> version, std::shared_ptr<const api::DeployCancel> cancel,
                   DeployDone done) override {
    return publisher_->Start(name, image, version, std::move(cancel), std::move(done));
  }

  Result<nlohmann::json> Nodes() override {
    if (!node_) return api::Backend::Nodes();
    const cluster::Node::Health health = node_->health();
    nlohmann::json nodes = nlohmann::json::array();
    for (const cluster::NodeInfo& node : health.nodes)
      nodes.push_back({{"name", node.name},
                       {"address", node.address},
                       {"version", node.version},
                       {"self", node.name == node_->self().name}});
    return nlohmann::json{
        {"node", node_->self().name},
        {"etcd", health.announced ? "ok" : health.error},
        {"as_of", health.nodes.empty() && !health.announced ? "" : logs::FormatTime(health.as_of)},
        {"nodes", std::move(nodes)}};
  }

  Result<nlohmann::json> Describe(const std::string& name) override {
    Result<nlohmann::json> local = DescribeHere(name);
    if (sync_) return sync_->Describe(name, std::move(local));
    return local;
  }

  Result<nlohmann::json> GetIp(const std::string& name) override {
    const auto* record = functions_->registry().Find(name);
    if (!record) {
      if (!sync_) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
      FAAS_ASSIGN_OR_RETURN(nlohmann::json answer, sync_->GetIp(name));
      answer["port"] = options_.functions.listener.port;
      return answer;
    }
    return nlohmann::json{
        {"name", name}, {"ip", record->ip}, {"port", options_.functions.listener.port}};
  }

  nlohmann::json List() override {
    nlohmann::json local = functions_->registry().ToJson();
    if (sync_) return sync_->List(std::move(local));
    return local;
  }

  std::vector<std::string> Degraded() override {
    std::vector<std::string> reasons;
    for (const auto& name : functions_->PausedListeners())
      reasons.push_back("the listener of " + name +
                        " is paused: accept failed (out of fds or memory)");
    return reasons;
  }

  void StartRemove(const std::string& name, DeployDone done) override {
    if (!sync_) return done(Remove(name));
    sync_->Remove(name, ThenStatus(std::move(done)));
  }

  void StartRollback(const std::string& name, std::optional<uint64_t> version,
                     DeployDone done) override {
    if (!sync_) return done(Rollback(name, version));
    sync_->Rollback(name, version, std::move(done));
  }

  Result<nlohmann::json> Remove(const std::string& name) override {
    FAAS_RETURN_IF_ERROR(functions_->Remove(name));
    notifier_.UpdateStatus();
    return nlohmann::json{{"name", name}};
  }

  Result<LogAnswer> Logs(const std::string& name, const logs::LogQuery& query,
                         logs::LogFollower* follower) override {
    if (!functions_->registry().Find(name))
      return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    LogAnswer answer;
    if (!query.follow || query.tail != 0u) {
      FAAS_ASSIGN_OR_RETURN(answer.records, logs_->Read(name, query));
    }
    if (follower) answer.subscription = logs_->Follow(name, query, follower);
    return answer;
  }

  Result<nlohmann::json> Versions(const std::string& name) override {
    const auto* serving = functions_->registry().Find(name);
    if (!serving) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    nlohmann::json versions = nlohmann::json::array({VersionJson(*serving, true)});
    for (const auto& kept : functions_->registry().Kept(name))
      versions.push_back(VersionJson(kept, false));
    return nlohmann::json{
        {"name", name}, {"serving", serving->version}, {"versions", std::move(versions)}};
  }

  Result<nlohmann::json> Rollback(const std::string& name,
                                  std::optional<uint64_t> version) override {
    const auto* serving = functions_->registry().Find(name);
    const uint64_t from = serving ? serving->version : 0;
    FAAS_ASSIGN_OR_RETURN(store::FunctionRecord record, functions_->Rollback(name, version));
    return nlohmann::json{
        {"name", name}, {"ip", record.ip}, {"version", record.version}, {"from_version", from}};
  }

  std::optional<std::string> Metrics() override { return metrics_.Render(); }

  nlohmann::json Version() override {
    return {{"version", kVersion}, {"api", kApiVersion}, {"runtime", options_.runtime.program}};
  }

 private:
  // `done`, then systemd's status line updated (the functions changed).
  DeployDone ThenStatus(DeployDone done) {
    return [this, done = std::move(done)](Result<nlohmann::json> result) {
      done(std::move(result));
      notifier_.UpdateStatus();
    };
  }

  Result<nlohmann::json> DescribeHere(const std::string& name) {
    const auto* record = functions_->registry().Find(name);
    if (!record) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    nlohmann::json out = store::ToJson(*record);
    out["name"] = name;
    if (auto stats = functions_->RuntimeStats(name); stats.ok()) out["runtime"] = *stats;
    return out;
  }

  // With --cluster: the functions follow the cluster's specs (server/cluster_sync.h).
  Status StartCluster() {
    const cluster::NodeOptions& node = *options_.cluster;
    watcher_ = std::make_unique<cluster::Watcher>(
        cluster::WatcherOptions{.etcd = node.etcd, .prefix = node.prefix},
        [this] { asio::post(io_, [this] { sync_->OnChange(); }); });
    sync_ = std::make_unique<ClusterSync>(
        io_, pool_, *functions_, *deployer_, *publisher_, *node_, *watcher_,
        ClusterSyncOptions{.etcd = node.etcd,
                           .prefix = node.prefix,
                           .pool = options_.functions.pool,
                           .keep_versions = options_.functions.keep_versions,
                           .registry = options_.cluster_registry,
                           .bird = options_.bird});
    FAAS_RETURN_IF_ERROR(sync_->Start());
    watcher_->Start();
    return Ok();
  }

  // What systemd shows as the service's status (`systemctl status faasd`).
  std::string ServiceStatus() const {
    uint64_t requests = 0;
    for (const auto& [name, record] : functions_->registry().functions())
      if (auto stats = functions_->RuntimeStats(name); stats.ok())
        requests += stats->value("requests", uint64_t{0});
    return std::to_string(functions_->registry().functions().size()) + " function(s), " +
           std::to_string(requests) + " request(s) served";
  }

  // Library code should never throw into the loop; if it does, the daemon logs it
  // and keeps serving rather than dropping every request in flight.
  void RunLoop() {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::critical("unexpected exception in the event loop: {}", e.what());
      }
    }
  }

  // One faasd per state dir and per run dir: a second one would take the first one's
  // containers for leftovers and its socket. Before anything else touches them.
  Status LockDirs() {
    FAAS_RETURN_IF_ERROR(MakeDirs(state_.root(), 0700));
    FAAS_ASSIGN_OR_RETURN(state_lock_, store::LockDir(state_.root()));
    const std::string run_dir = AbsolutePath(options_.run_dir);
    if (run_dir == state_.root()) return Ok();  // one dir, one lock
    FAAS_RETURN_IF_ERROR(MakeDirs(run_dir));
    FAAS_ASSIGN_OR_RETURN(run_lock_, store::LockDir(run_dir));
    return Ok();
  }

  Status Start() {
    FAAS_RETURN_IF_ERROR(state_.Create());
    FAAS_RETURN_IF_ERROR(PrepareBundlesDir());
    ::chmod(options_.run_dir.c_str(), 0700);
    FAAS_ASSIGN_OR_RETURN(std::string token, ReadToken(options_.token_file));
    runtime::RuntimeConfig runtime_config = options_.runtime;
    if (runtime_config.root.empty()) runtime_config.root = options_.run_dir + "/runc";
    FAAS_ASSIGN_OR_RETURN(runtime_, runtime::OpenOciRuntime(runtime_config));
    FAAS_RETURN_IF_ERROR(runtime::CheckCgroupControllers(runtime_config.cgroup_fs));
    CreateLogs();
    telemetry_.Add(logs_.get());
    functions_ = std::make_unique<Functions>(
        io_, state_, *runtime_, options_.functions,
        [this](std::string path) {
          asio::post(pool_, [this, path = std::move(path)] {
            RemoveRetired(path, layers_.get(), state_);
          });
        },
        telemetry_);
    FAAS_RETURN_IF_ERROR(functions_->Start());
    // After the start's clean-up of stale versions, whose layers go too.
    layers_ = std::make_unique<image::LayerStore>(state_.LayersDir());
    FAAS_RETURN_IF_ERROR(layers_->Open());
    CollectLayers(*layers_, state_);
    if (options_.cluster) {
      node_ = std::make_unique<cluster::Node>(*options_.cluster);
      node_->Start();
    }
    metrics_.SetSources({
        .functions = [this] { return FunctionLoads(*functions_); },
        .containers_running =
            [this] { return static_cast<uint64_t>(functions_->ContainersAlive()); },
        .dropped_lines = [this](const std::string& name) { return logs_->DroppedLines(name); },
        .layer_cache =
            [this] {
              if (!blob_cache_) return LayerCacheStats{};
              const pull::BlobCache::Counters c = blob_cache_->counters();
              return LayerCacheStats{.bytes = c.bytes,
                                     .limit_bytes = blob_cache_->max_bytes(),
                                     .blobs = c.blobs,
                                     .hits = c.hits,
                                     .misses = c.misses,
                                     .evictions = c.evictions};
            },
    });
    StartLogs();
    blob_cache_ =
        std::make_unique<pull::BlobCache>(state_.root() + "/cache/blobs", options_.cache_size);
    FAAS_RETURN_IF_ERROR(blob_cache_->Open());
    deployer_ =
        std::make_unique<Deployer>(io_, pool_, state_, *functions_, telemetry_,
                                   DeployerOptions{
                                       .limits = options_.limits,
                                       .defaults = options_.defaults,
                                       .scaling = options_.scaling,
                                       .ids = {.base = options_.userns ? options_.userns_base : 0,
                                               .size = runtime::kUsernsSize},
                                       .registry = options_.registry,
                                       .blob_cache = blob_cache_.get(),
                                       .layers = layers_.get(),
                                   });
    publisher_ = std::make_unique<Publisher>(io_, pool_, state_, *functions_, options_.registry,
                                             blob_cache_.get());
    if (options_.cluster) FAAS_RETURN_IF_ERROR(StartCluster());
    api::Options api_options;
    api_options.unix_path =
        options_.socket.empty() ? options_.run_dir + "/faasd.sock" : options_.socket;
    api_options.tcp_listen = options_.listen_tcp;
    api_options.token = token;
    api_options.metrics_listen = options_.metrics_listen;
    api_options.max_image_bytes = options_.limits.max_image_bytes;
    api_options.idle_timeout = options_.api_timeout;
    api_ = std::make_unique<api::Server>(io_, *this, api_options);
    return api_->Start();
  }

  // Before Functions, which reports to it; stale logs go once the registry is loaded.
  void CreateLogs() {
    logs_ = std::make_unique<logs::FunctionLogs>(
        io_, logs::LogOptions{.dir = state_.LogsDir(),
                              .max_bytes = options_.log_size,
                              .rate_bytes = options_.log_rate,
                              .journald = options_.log_journald});
  }

  void StartLogs() {
    std::set<std::string> live;
    for (const auto& [name, record] : functions_->registry().functions()) live.insert(name);
    for (const Error& e : logs_->Start(live)) spdlog::warn("logs: {}", e.message);
  }

  // With a user namespace a container's root is an unprivileged host user: it must
  // traverse to its bundle's control socket (its group may search, nobody else).
  Status PrepareBundlesDir() {
    const std::string bundles = state_.BundlesDir();
    if (options_.userns && ::chown(bundles.c_str(), 0, options_.userns_base) != 0)
      return SysError(errno, "chown " + bundles);
    if (::chmod(bundles.c_str(), options_.userns ? 0710 : 0700) != 0)
      return SysError(errno, "chmod " + bundles);
    return Ok();
  }

  DaemonOptions options_;
  store::StateDir state_;
  UniqueFd state_lock_, run_lock_;               // held for the daemon's life
  std::unique_ptr<runtime::Runtime> runtime_;    // outlives the loop's last handlers
  std::unique_ptr<pull::BlobCache> blob_cache_;  // outlives the pulls on pool_
  std::unique_ptr<image::LayerStore> layers_;    // likewise the imports and removals
  asio::io_context io_;
  asio::thread_pool pool_;
  asio::signal_set signals_;
  server::Metrics metrics_;                   // a sink of telemetry_
  std::unique_ptr<logs::FunctionLogs> logs_;  // a sink of telemetry_
  TelemetryFanout telemetry_;                 // its sinks outlive functions_ and deployer_
  std::unique_ptr<Functions> functions_;
  std::unique_ptr<Deployer> deployer_;
  std::unique_ptr<Publisher> publisher_;
  std::unique_ptr<cluster::Node> node_;        // with --cluster; stopped on the pool
  std::unique_ptr<cluster::Watcher> watcher_;  // likewise
  std::unique_ptr<ClusterSync> sync_;
  std::unique_ptr<api::Server> api_;
  ServiceNotifier notifier_;  // after functions_: its status reads them
};

Daemon::Daemon(DaemonOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Daemon::~Daemon() = default;
int Daemon::Run() { return impl_->Run(); }

}  // namespace faas::server
