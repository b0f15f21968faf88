// The faasd daemon: one event loop thread that owns the functions (their
// listeners, scalers and containers), the deploys and the control API, plus a
// small thread pool for image imports and removing old rootfs trees.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "api/server.h"
#include "cluster/bird.h"
#include "cluster/node.h"
#include "image/importer.h"
#include "pull/puller.h"
#include "runtime/runtime.h"
#include "server/functions.h"

namespace faas::server {

struct DaemonOptions {
  std::string state_dir = "/var/lib/faasd";
  std::string run_dir = "/run/faasd";
  std::string socket;  // default: RUN_DIR/faasd.sock
  std::string listen_tcp;
  std::string token_file;
  std::string metrics_listen;  // HOST:PORT of the metrics listener; empty: none
  std::chrono::milliseconds drain_timeout{10000};
  std::chrono::milliseconds api_timeout{60000};  // api::Options::idle_timeout
  int workers = 2;
  image::ImportLimits limits;
  store::FunctionLimits defaults;  // for deploys that do not set their own
  store::ScalingOptions scaling;   // likewise
  bool userns = false;             // containers in a user namespace
  uint32_t userns_base = 100000;   // its first host id; 65536 are mapped
  // The OCI runtime; its root defaults to RUN_DIR/runc whichever runtime it is (a
  // name derived from the program could be the program itself, or anything else
  // an operator keeps in RUN_DIR).
  runtime::RuntimeConfig runtime;
  FunctionsOptions functions;
  // Per-function logs (logs/function_log.h): STATE/logs; journald: also sent there.
  uint64_t log_size = 8ull << 20;
  uint64_t log_rate = 1ull << 20;
  bool log_journald = false;
  pull::RegistryOptions registry;  // deploys by image reference
  // Their layers, kept by digest in STATE/cache/blobs (pull/blob_cache.h).
  uint64_t cache_size = 1ull << 30;
  // With --cluster: this node's membership (cluster/node.h); none: faasd runs alone.
  std::optional<cluster::NodeOptions> cluster;
  // With --cluster: where archives deployed here are pushed (server/cluster_sync.h),
  // and the routes exported to bird.
  std::string cluster_registry;
  cluster::BirdOptions bird;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  ~Daemon();
  // Starts, serves until SIGTERM/SIGINT, drains and cleans up. Returns the exit code.
  int Run();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faas::server
