// The control API: HTTP/1.1 on a unix socket (default) and optionally on TCP.
//
//   POST   /api/new              X-Image-Name: NAME, body = image (streamed); or
//                                "image": REF (and "platform") in X-Function-Options
//                                and no body: faasd pulls REF from its registry
//                                {"name","ip","cmd"[,"image_ref","manifest_digest"]},
//                                or {...,"unchanged":true} when REF is what serves
//   GET    /api/ip/NAME          {"name","ip","port"}
//   GET    /api/list             the registry object
//   GET    /api/functions/NAME   the function's record, with "name"
//   DELETE /api/functions/NAME   {"name"}
//   GET    /api/functions/NAME/versions
//                                {"name","serving","versions":[{"version","image_digest",
//                                 "deployed_at","serving","options","limits","scaling",...}]}
//   POST   /api/functions/NAME/rollback[?version=N]
//                                {"name","ip","version","from_version"}
//   GET    /api/functions/NAME/logs[?since=DUR|TIME&tail=N&stream=stdout|stderr|request&follow=1]
//                                the function's log records, NDJSON (logs/function_log.h); with
//                                follow=1 chunked and kept open, new records as they are written
//   GET    /api/version          {"version","api","runtime"}
//   GET    /healthz              {"status":"ok"}, or 503 {"status":"degraded","reasons":[...]}
//   GET    /metrics              Prometheus text format (kMetricsContentType)
//
// Errors are {"error": "..."} with the status of their Errc. Runs on the event
// loop thread; the backend is called on that thread only.
//
// Each listener has its own connection cap, so TCP clients cannot take the unix
// socket's. A TCP connection has a short deadline for its first request's header;
// a request without the right token gets a 401 and the connection is closed. The TCP
// API without a token answers only requests whose Host names a loopback address or
// localhost (a web page that rebinds its DNS name to 127.0.0.1 gets a 403).
//
// The metrics listener (Options::metrics_listen) is a TCP listener of its own that
// answers GET /metrics and nothing else (404), without a token; it has its own small
// connection cap and short deadlines, so its clients cannot take the control API's.
//
// A deploy's client that closes the connection (or its sending side) before the
// answer calls the deploy off: nobody would learn that it committed.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "logs/query.h"

namespace faas::api {

// Calls off a deploy whose client went away. Set on the loop thread; read on any.
class DeployCancel {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

// What the API needs from the daemon; implemented by server::Daemon.
class Backend {
 public:
  using DeployDone = std::function<void(Result<nlohmann::json>)>;
  virtual ~Backend() = default;
  // Starts importing `name`; returns the write end of a pipe to stream the image
  // into (the caller closes it at the end of the body). `done` runs on the loop
  // once the import has finished and the deploy is committed or rolled back.
  // `options` is the X-Function-Options header (JSON; may be empty). Once `cancel`
  // is set, the deploy commits nothing (no function, version or address) unless it
  // was committed already; `done` still runs, with an error if it did not commit.
  virtual Result<UniqueFd> StartDeploy(const std::string& name, const std::string& options,
                                       std::shared_ptr<const DeployCancel> cancel,
                                       DeployDone done) = 0;
  virtual Result<nlohmann::json> Describe(const std::string& name) = 0;
  virtual Result<nlohmann::json> GetIp(const std::string& name) = 0;
  virtual nlohmann::json List() = 0;
  virtual Result<nlohmann::json> Remove(const std::string& name) = 0;
  // The kept versions of `name`, the serving one first.
  virtual Result<nlohmann::json> Versions(const std::string& name) = 0;
  // Makes `version` (none: the one that served before) of `name` serve again.
  virtual Result<nlohmann::json> Rollback(const std::string& name,
                                          std::optional<uint64_t> version) = 0;
  // What the API calls: Remove and Rollback, answered through `done` (at once here; a
  // cluster node answers once etcd has the change).
  virtual void StartRemove(const std::string& name, DeployDone done) { done(Remove(name)); }
  virtual void StartRollback(const std::string& name, std::optional<uint64_t> version,
                             DeployDone done) {
    done(Rollback(name, version));
  }
  // Why faasd cannot serve fully right now (e.g. a function's listener paused for
  // lack of fds), one sentence each; empty when healthy.
  virtual std::vector<std::string> Degraded() { return {}; }
  // The metrics in the Prometheus text format; none: faasd keeps none (404).
  virtual std::optional<std::string> Metrics() { return std::nullopt; }
  // The records of `name`'s log that match `query`, NDJSON, oldest first. With a
  // `follower` it also gets each matching record written from now on, until
  // `subscription` is dropped or its OnEnd runs. kNotFound for an unknown function.
  struct LogAnswer {
    std::string records;
    std::shared_ptr<void> subscription;
  };
  virtual Result<LogAnswer> Logs(const std::string& name, const logs::LogQuery& /*query*/,
                                 logs::LogFollower* /*follower*/) {
    return MakeError(Errc::kNotFound, "no log kept for '" + name + "'");
  }
  // Starts pushing `version` of `name` (none: the serving one) to the registry
  // reference `image`. `done` runs on the loop with the answer once the push has ended;
  // once `cancel` is set the push is called off (`done` still runs). Errors returned
  // mean nothing was started.
  virtual Status StartPush(const std::string& name, const std::string& /*image*/,
                           std::optional<uint64_t> /*version*/,
                           std::shared_ptr<const DeployCancel> /*cancel*/, DeployDone /*done*/) {
    return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  }
  // The cluster's nodes as this node last read them from etcd: {"node": its own name,
  // "etcd": "ok" or why not, "as_of": RFC 3339, "nodes": [{"name", "address",
  // "version", "self"}]}. kNotFound when faasd runs alone (no --cluster).
  virtual Result<nlohmann::json> Nodes() {
    return MakeError(Errc::kNotFound, "faasd runs alone: start it with --cluster to join one");
  }
  // {"version": faasd's release, "api": kApiVersion (common/version.h), ...}.
  virtual nlohmann::json Version() = 0;
};

struct Options {
  std::string unix_path;   // e.g. /run/faasd/faasd.sock; created with mode 0600
  std::string tcp_listen;  // "127.0.0.1:8080"; empty: no TCP listener
  std::string token;       // when not empty, TCP requests need "Authorization: Bearer <token>"
  uint64_t max_image_bytes = 8ull << 30;
  uint64_t max_header_bytes = 16 << 10;
  // How long a client may send nothing while it uploads an image. Waiting for the
  // importer (a queued deploy, a full pipe) is not the client's idleness.
  std::chrono::milliseconds idle_timeout{60000};
  size_t max_unix_connections = 256;  // beyond these a new connection is closed at once
  size_t max_tcp_connections = 64;
  std::string metrics_listen;  // "127.0.0.1:9100" or "[::1]:9100"; empty: no metrics listener
  size_t max_metrics_connections = 8;
};

// Checks a TCP listen address, HOST:PORT with an IPv6 HOST in brackets; the error
// (kInvalidArgument) says what is wrong.
Status CheckListenAddress(const std::string& spec);

class Server {
 public:
  Server(boost::asio::io_context& io, Backend& backend, Options options);
  ~Server();
  Status Start();
  // Stops accepting and closes every open connection (an upload in progress fails).
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faas::api
