// The control API: HTTP/1.1 on a unix socket (default) and optionally on TCP.
//
//   POST   /api/new              X-Image-Name: NAME, body = image (streamed)
//   GET    /api/ip/NAME          {"name","ip"}
//   GET    /api/list             the registry object
//   GET    /api/functions/NAME   the function's record, with "name"
//   DELETE /api/functions/NAME   {"name"}
//   GET    /healthz              {"status":"ok"}, or 503 {"status":"degraded","reasons":[...]}
//
// Errors are {"error": "..."} with the status of their Errc. Runs on the event
// loop thread; the backend is called on that thread only.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace faas::api {

// What the API needs from the daemon; implemented by server::Daemon.
class Backend {
 public:
  using DeployDone = std::function<void(Result<nlohmann::json>)>;
  virtual ~Backend() = default;
  // Starts importing `name`; returns the write end of a pipe to stream the image
  // into (the caller closes it at the end of the body). `done` runs on the loop
  // once the import has finished and the deploy is committed or rolled back.
  // `options` is the X-Function-Options header (JSON; may be empty).
  virtual Result<UniqueFd> StartDeploy(const std::string& name, const std::string& options,
                                       DeployDone done) = 0;
  virtual Result<nlohmann::json> Describe(const std::string& name) = 0;
  virtual Result<nlohmann::json> GetIp(const std::string& name) = 0;
  virtual nlohmann::json List() = 0;
  virtual Result<nlohmann::json> Remove(const std::string& name) = 0;
  // Why faasd cannot serve fully right now (e.g. a function's listener paused for
  // lack of fds), one sentence each; empty when healthy.
  virtual std::vector<std::string> Degraded() { return {}; }
};

struct Options {
  std::string unix_path;   // e.g. /run/faasd/faasd.sock; created with mode 0600
  std::string tcp_listen;  // "127.0.0.1:8080"; empty: no TCP listener
  std::string token;       // required as "Authorization: Bearer <token>" when not empty
  uint64_t max_image_bytes = 8ull << 30;
  uint64_t max_header_bytes = 16 << 10;
};

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
