// faasd: the daemon. `faasd [flags]` serves; `faasd unpack IMAGE DIR` imports an
// image archive into DIR without a daemon (for debugging and tests).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "common/file.h"
#include "common/log.h"
#include "image/importer.h"
#include "server/daemon.h"

namespace {

// Resolves a program name through PATH, like the shell would; a path is kept as is.
std::string FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return name;
}

// Every client, container and control connection costs faasd fds: take all the hard
// limit allows rather than the soft default (often 1024).
void RaiseFdLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0)
    spdlog::debug("raised the open files limit from {} to {}", soft, limit.rlim_max);
}

int Unpack(const std::string& image, const std::string& dir,
           const faas::image::ImportLimits& limits) {
  faas::UniqueFd fd(image == "-" ? ::dup(0) : ::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    std::cerr << "Error: open " << image << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  std::string work = dir + ".work";
  auto status = faas::MakeDirs(dir);
  if (status.ok()) status = faas::MakeDirs(work);
  if (!status.ok()) {
    std::cerr << "Error: " << status.error().message << "\n";
    return 1;
  }
  faas::image::ImportStats stats;
  auto config = faas::image::ImportImage(fd.get(), work, dir, limits, &stats);
  (void)faas::RemoveTree(work);
  if (!config.ok()) {
    std::cerr << "Error: " << config.error().message << "\n";
    return 1;
  }
  nlohmann::json out = {
      {"cmd", config->cmd},         {"env", config->env},     {"working_dir", config->working_dir},
      {"user", config->user},       {"layers", stats.layers}, {"files", stats.files},
      {"bytes", stats.rootfs_bytes}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  faas::server::DaemonOptions options;
  std::string log_level = "info";
  std::string runtime = "runc";
  long connect_ms = 5000, run_ms = 30000, drain_ms = 10000;

  CLI::App app{
      "faasd: a single-node Function-as-a-Service daemon. It imports container images, gives\n"
      "every function its own address on lo (label lo:faas) and answers every TCP connection\n"
      "to it with a fresh container started by runc. Control it with `faas`."};
  app.set_version_flag("--version", "faasd 0.1.0");
  app.add_option("--state-dir", options.state_dir, "State directory")->capture_default_str();
  app.add_option("--run-dir", options.run_dir, "Runtime directory (socket, runc state)")
      ->capture_default_str();
  app.add_option("--socket", options.socket,
                 "Control API unix socket (default RUN_DIR/faasd.sock)");
  app.add_option("--listen-tcp", options.listen_tcp, "Also serve the control API on HOST:PORT");
  app.add_option("--token-file", options.token_file, "Bearer token required by the TCP API");
  app.add_option("--pool", options.functions.pool, "Address pool for functions")
      ->capture_default_str();
  app.add_option("--port", options.functions.listener.port, "Port functions listen on")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--runtime", runtime, "OCI runtime with runc's command line (runc, crun)")
      ->capture_default_str();
  app.add_option("--connect-timeout", connect_ms,
                 "Default ms a handler has to connect to /control.sock")
      ->capture_default_str();
  app.add_option("--run-timeout", run_ms, "Default ms a handler may run after it got its client")
      ->capture_default_str();
  std::string idle_timeout = "5m", queue_timeout = "10s", rate_limit = "0", first_byte = "5s",
              api_timeout = "60s";
  app.add_option("--first-byte-timeout", first_byte,
                 "Close a client that sends nothing for this long before it gets a container "
                 "(0: hand it over at once, for protocols where the server speaks first)")
      ->capture_default_str();
  app.add_option("--api-timeout", api_timeout,
                 "Control API: longest silence of a client uploading an image, e.g. 60s")
      ->capture_default_str();
  auto& scaling = options.scaling;
  app.add_option("--warm", scaling.warm, "Containers kept started ahead per function (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--warm-max", scaling.warm_max,
                 "Most containers the adaptive pool keeps per function (at least --warm)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--idle-timeout", idle_timeout,
                 "Stop a function's pool after this long without requests, e.g. 5m")
      ->capture_default_str();
  app.add_option("--max-concurrency", scaling.max_concurrency,
                 "Requests served at once per function; more wait in the queue")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--queue", scaling.queue,
                 "Requests waiting per function; beyond it faasd answers 503")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  app.add_option("--queue-timeout", queue_timeout,
                 "Longest wait in the queue before a 503, e.g. 10s")
      ->capture_default_str();
  app.add_option("--rate-limit", rate_limit,
                 "Requests per second per function, beyond it 429 (0: off)")
      ->capture_default_str();
  app.add_option("--reuse", scaling.reuse,
                 "Requests one container serves in turn (1: a fresh container for each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--drain-timeout", drain_ms, "ms to let running requests finish on SIGTERM")
      ->capture_default_str();
  app.add_option("--max-image-size", options.limits.max_image_bytes,
                 "Largest accepted image archive, bytes")
      ->capture_default_str();
  app.add_option("--max-rootfs-size", options.limits.max_rootfs_bytes,
                 "Largest unpacked rootfs, bytes")
      ->capture_default_str();
  app.add_option("--max-files", options.limits.max_files, "Most entries in an unpacked rootfs")
      ->capture_default_str();
  app.add_option("--max-depth", options.limits.max_depth,
                 "Most path components of an entry of an unpacked rootfs")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_flag("--userns", options.userns,
               "Run containers in a user namespace: their root is host uid --userns-base");
  app.add_option("--userns-base", options.userns_base, "First host uid/gid of the 65536 mapped")
      ->capture_default_str()
      ->check(CLI::Range(1u, 0xfffeffffu));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  std::string unpack_image, unpack_dir;
  auto* unpack = app.add_subcommand(
      "unpack", "Import an image archive into DIR and print its config (no daemon)");
  unpack->add_option("IMAGE", unpack_image, "Image archive, or - for stdin")->required();
  unpack->add_option("DIR", unpack_dir, "Directory to unpack the rootfs into")->required();

  CLI11_PARSE(app, argc, argv);
  if (auto st = faas::SetupLogging(log_level); !st.ok()) {
    std::cerr << "Error: " << st.error().message << "\n";
    return 2;
  }
  if (*unpack) return Unpack(unpack_image, unpack_dir, options.limits);

  if (::geteuid() != 0) {
    std::cerr << "Error: faasd must run as root (it adds addresses and starts containers)\n";
    return 1;
  }
  options.runtime.program = FindProgram(runtime);
  options.defaults.connect_timeout_ms = static_cast<uint64_t>(connect_ms);
  options.defaults.timeout_ms = static_cast<uint64_t>(run_ms);
  options.drain_timeout = std::chrono::milliseconds(drain_ms);
  auto idle = faas::store::ParseDuration(idle_timeout, "--idle-timeout");
  auto queue_wait = faas::store::ParseDuration(queue_timeout, "--queue-timeout");
  auto rate = faas::store::ParseRate(rate_limit);
  auto first_byte_ms = faas::store::ParseDuration(first_byte, "--first-byte-timeout");
  auto api_wait = faas::store::ParseDuration(api_timeout, "--api-timeout");
  for (const faas::Error* error :
       {idle.ok() ? nullptr : &idle.error(), queue_wait.ok() ? nullptr : &queue_wait.error(),
        rate.ok() ? nullptr : &rate.error(), api_wait.ok() ? nullptr : &api_wait.error(),
        first_byte_ms.ok() ? nullptr : &first_byte_ms.error()}) {
    if (error) {
      std::cerr << "Error: " << error->message << "\n";
      return 2;
    }
  }
  scaling.idle_timeout_ms = *idle;
  scaling.queue_timeout_ms = *queue_wait;
  scaling.rate_limit = *rate;
  options.api_timeout = std::chrono::milliseconds(*api_wait);
  scaling.warm_max = std::max(scaling.warm, scaling.warm_max);
  options.functions.listener.first_byte_timeout = std::chrono::milliseconds(*first_byte_ms);
  RaiseFdLimit();
  faas::server::Daemon daemon(options);
  return daemon.Run();
}
