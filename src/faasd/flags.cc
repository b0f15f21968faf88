#include "faasd/flags.h"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <iostream>

#include "common/text.h"
#include "common/version.h"
#include "logs/function_log.h"
#include "pull/reference.h"
#include "store/limits.h"
#include "store/names.h"

namespace faas::faasd {
namespace {

constexpr char kAbout[] =
    "faasd: a single-node Function-as-a-Service daemon. It imports container images, gives\n"
    "every function its own address on lo (label lo:faas) and answers every TCP connection\n"
    "to it with a fresh container started by runc. Control it with `faas`.";

constexpr char kDurations[] =
    "Durations: 500ms, 5s, 2m or 1h. A bare number keeps each flag's historical unit:\n"
    "milliseconds for --connect-timeout, --run-timeout and --drain-timeout, seconds for the\n"
    "others.";

// The three Add*Flags run in this order because --help lists the flags as added.
void AddServingFlags(CLI::App& app, Flags& flags) {
  server::DaemonOptions& options = flags.options;
  app.add_option("--state-dir", options.state_dir, "State directory")->capture_default_str();
  app.add_option("--run-dir", options.run_dir, "Runtime directory (socket, runc state)")
      ->capture_default_str();
  app.add_option("--socket", options.socket,
                 "Control API unix socket (default RUN_DIR/faasd.sock)");
  app.add_option("--listen-tcp", options.listen_tcp, "Also serve the control API on HOST:PORT");
  app.add_option("--token-file", options.token_file, "Bearer token required by the TCP API");
  app.add_option("--metrics-listen", options.metrics_listen,
                 "Serve Prometheus metrics (GET /metrics, plain HTTP, no token) on HOST:PORT, "
                 "e.g. 127.0.0.1:9100 or [::1]:9100; default none. A non-loopback HOST is "
                 "allowed: it exposes the metrics alone, to whoever reaches it. The control API "
                 "also answers GET /metrics");
  app.add_option("--pool", options.functions.pool, "Address pool for functions")
      ->capture_default_str();
  app.add_option("--port", options.functions.listener.port, "Port functions listen on")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--keep-versions", options.functions.keep_versions,
                 "Versions kept per function for a rollback, the serving one included")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--runtime", flags.runtime, "OCI runtime with runc's command line (runc, crun)")
      ->capture_default_str();
  app.add_option("--connect-timeout", flags.connect_timeout,
                 "Default time a handler has to connect to /control.sock, e.g. 5s (a bare "
                 "number is ms)")
      ->capture_default_str();
  app.add_option("--run-timeout", flags.run_timeout,
                 "Default time a handler may run after it got its client, e.g. 30s (a bare "
                 "number is ms)")
      ->capture_default_str();
  app.add_option("--first-byte-timeout", flags.first_byte_timeout,
                 "Close a client that sends nothing for this long before it gets a container, "
                 "e.g. 5s (0: hand it over at once, for protocols where the server speaks first)")
      ->capture_default_str();
  app.add_option("--api-timeout", flags.api_timeout,
                 "Control API: longest silence of a client uploading an image, e.g. 60s")
      ->capture_default_str();
}

void AddScalingFlags(CLI::App& app, Flags& flags) {
  store::ScalingOptions& scaling = flags.options.scaling;
  app.add_option("--warm", scaling.warm,
                 "Containers kept started ahead per function, each waiting for its request "
                 "(the warm path: a request is handed to one at once). 0: none, each request "
                 "starts its own container")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--warm-max", scaling.warm_max,
                 "Most containers the adaptive pool keeps per function (at least --warm; "
                 "no pool grows from --warm 0)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--idle-timeout", flags.idle_timeout,
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
  app.add_option("--queue-timeout", flags.queue_timeout,
                 "Longest wait in the queue before a 503, e.g. 10s")
      ->capture_default_str();
  app.add_option("--rate-limit", flags.rate_limit,
                 "Requests per second per function, beyond it 429 (0: off)")
      ->capture_default_str();
  app.add_option("--reuse", scaling.reuse,
                 "Requests one container serves in turn (1: a fresh container for each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--drain-timeout", flags.drain_timeout,
                 "Time running requests have to finish on SIGTERM, e.g. 10s (a bare number is "
                 "ms; 0: kill them at once)")
      ->capture_default_str();
}

void AddLimitFlags(CLI::App& app, Flags& flags) {
  server::DaemonOptions& options = flags.options;
  app.add_option("--max-image-size", options.limits.max_image_bytes,
                 "Largest accepted image archive (or pulled image), bytes")
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
  app.add_option("--registry-auth", flags.registry_auth,
                 "Registry credentials, docker's config.json format (default "
                 "$REGISTRY_AUTH_FILE, else /root/.docker/config.json if it exists)");
  app.add_option("--insecure-registry", options.registry.insecure,
                 "Pull from this HOST[:PORT] over plain HTTP (repeat it; loopback registries "
                 "always are)")
      ->allow_extra_args(false);
  app.add_option("--registry-ca", options.registry.ca_file,
                 "PEM CA certificates trusted for registries' HTTPS besides the system's")
      ->check(CLI::ExistingFile);
  app.add_option("--cache-size", flags.cache_size,
                 "Disk kept for layers pulled by `faas new --image` (STATE/cache/blobs), "
                 "least recently used evicted first; 0 keeps none past its deploy")
      ->capture_default_str();
  app.add_flag("--cluster", flags.cluster,
               "Join a cluster: announce this node in etcd (--etcd) under a lease and list "
               "the nodes (`faas nodes`)");
  app.add_option("--etcd", flags.etcd,
                 "etcd's client URLs, http://HOST:PORT, comma-separated or repeated (with "
                 "--cluster)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--node-name", flags.node_name,
                 "This node's name in the cluster (default: "
                 "the host name)");
  app.add_option("--advertise-address", flags.advertise_address,
                 "The address other nodes and operators reach this node at (shown by "
                 "`faas nodes`)");
  app.add_option("--node-ttl", flags.node_ttl,
                 "How long a node that stops renewing its lease stays listed, e.g. 10s")
      ->capture_default_str();
  app.add_option("--registry", flags.cluster_registry,
                 "With --cluster: where an archive deployed on this node is pushed before "
                 "the other nodes pull it, HOST[:PORT]/PATH (the image is PATH/NAME:vN)");
  app.add_option("--bird-routes", flags.bird_routes,
                 "With --cluster: the bird2 configuration fragment this node writes, one "
                 "static /32 route per function it serves, for its BGP peers (see "
                 "docs/CLUSTER.md)");
  app.add_option("--bird-socket", flags.bird_socket,
                 "bird's control socket, for `birdc configure` after --bird-routes changes")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--log-size", flags.log_size,
                 "Disk kept for each function's log (`faas logs`): two files of half this "
                 "size, the older dropped when the newer is full, e.g. 8M")
      ->capture_default_str();
  app.add_option("--log-rate", flags.log_rate,
                 "Bytes per second each function may log, with a burst as large; lines over "
                 "it are dropped and counted, e.g. 1M")
      ->capture_default_str();
  app.add_option("--log-driver", flags.log_driver,
                 "file: functions' lines go to STATE/logs only; journald: to journald too "
                 "(default: journald when started by systemd, $JOURNAL_STREAM set)")
      ->check(CLI::IsMember({"file", "journald"}));
}

// "8M", "512K", "1G", "65536": bytes (binary units), from `min`.
Result<uint64_t> ParseSize(const std::string& text, const char* flag, uint64_t min) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  const std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  int shift = unit.empty() ? 0 : -1;
  if (unit.size() == 1) {
    const size_t at = std::string_view("KMG").find(static_cast<char>(std::toupper(unit[0])));
    if (at != std::string_view::npos) shift = 10 * static_cast<int>(at + 1);
  }
  if (ec != std::errc() || shift < 0 || value > (UINT64_MAX >> 30))
    return MakeError(Errc::kInvalidArgument, std::string("invalid ") + flag + " '" + text +
                                                 "': expected bytes or a size like 8M");
  value <<= shift;
  if (value < min)
    return MakeError(Errc::kInvalidArgument, std::string("invalid ") + flag + " '" + text +
                                                 "': at least " + std::to_string(min >> 10) + "K");
  return value;
}

// The registry credentials: the file given, else the default one if it exists.
Result<pull::AuthFile> LoadRegistryAuth(const std::string& given) {
  if (!given.empty()) return pull::AuthFile::Load(given);
  const char* env = std::getenv("REGISTRY_AUTH_FILE");
  const std::string path = env != nullptr && *env != '\0' ? env : "/root/.docker/config.json";
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return pull::AuthFile{};
  return pull::AuthFile::Load(path);
}

Status CheckInsecureRegistries(const std::vector<std::string>& hosts) {
  for (const std::string& host : hosts) {
    auto ref = pull::ParseReference(host + "/x");
    if (!ref.ok() || ref->domain != host) {
      return MakeError(Errc::kInvalidArgument,
                       "--insecure-registry " + EscapeControl(host) + ": expected HOST[:PORT]");
    }
  }
  return Ok();
}

}  // namespace

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  CLI::App app{kAbout};
  app.footer(kDurations);
  app.set_version_flag("--version", std::string("faasd ") + kVersion);
  AddServingFlags(app, flags);
  AddScalingFlags(app, flags);
  AddLimitFlags(app, flags);
  CLI::App* unpack = app.add_subcommand(
      "unpack", "Import an image archive into DIR and print its config (no daemon)");
  unpack->add_option("IMAGE", flags.unpack_image, "Image archive, or - for stdin")->required();
  unpack->add_option("DIR", flags.unpack_dir, "Directory to unpack the rootfs into")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      flags.exit_code = app.exit(e);  // --help, --version
    } else {
      // Like every other usage error of faasd and faas: "Error: ..." and exit 2.
      std::cerr << "Error: " << EscapeControl(e.what()) << "\nRun 'faasd --help' for usage.\n";
      flags.exit_code = 2;
    }
  }
  flags.unpack = unpack->parsed();
  return flags;
}

// The node's options, or none without --cluster.
Result<std::optional<cluster::NodeOptions>> ClusterOptionsFrom(const Flags& flags) {
  if (!flags.cluster) {
    if (!flags.etcd.empty())
      return MakeError(Errc::kInvalidArgument, "--etcd: only with --cluster");
    if (!flags.cluster_registry.empty())
      return MakeError(Errc::kInvalidArgument, "--registry: only with --cluster");
    if (!flags.bird_routes.empty())
      return MakeError(Errc::kInvalidArgument, "--bird-routes: only with --cluster");
    return std::optional<cluster::NodeOptions>();
  }
  if (flags.etcd.empty())
    return MakeError(Errc::kInvalidArgument, "--cluster: give etcd's client URLs with --etcd");
  for (const std::string& url : flags.etcd) {
    const std::string rest = url.starts_with("http://") ? url.substr(7) : "";
    if (rest.empty() || rest.find(':') == std::string::npos ||
        rest.find_first_of("/?#@ ") != std::string::npos)
      return MakeError(Errc::kInvalidArgument,
                       "--etcd: '" + EscapeControl(url) + "' is not http://HOST:PORT");
  }
  FAAS_ASSIGN_OR_RETURN(uint64_t ttl_ms, store::ParseDuration(flags.node_ttl, "--node-ttl"));
  if (ttl_ms < 2000) return MakeError(Errc::kInvalidArgument, "--node-ttl: at least 2s");
  std::string name = flags.node_name;
  if (name.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
      return MakeError(Errc::kInvalidArgument, "--node-name: the host has no name; give one");
    name = host;
  }
  if (Status valid = store::ValidateName(name); !valid.ok())
    return MakeError(Errc::kInvalidArgument, "--node-name: " + valid.error().message);
  cluster::NodeOptions node;
  node.etcd.endpoints = flags.etcd;
  node.self = {.name = name, .address = flags.advertise_address, .version = kVersion};
  node.ttl = std::chrono::seconds(ttl_ms / 1000);
  return std::optional<cluster::NodeOptions>(std::move(node));
}

Result<server::DaemonOptions> DaemonOptionsFrom(const Flags& flags) {
  constexpr store::DurationForm kBareMs{.bare_unit_ms = 1};
  FAAS_ASSIGN_OR_RETURN(uint64_t connect,
                        store::ParseDuration(flags.connect_timeout, "--connect-timeout", kBareMs));
  FAAS_ASSIGN_OR_RETURN(uint64_t run,
                        store::ParseDuration(flags.run_timeout, "--run-timeout", kBareMs));
  FAAS_ASSIGN_OR_RETURN(uint64_t drain,
                        store::ParseDuration(flags.drain_timeout, "--drain-timeout",
                                             {.bare_unit_ms = 1, .zero_allowed = true}));
  FAAS_ASSIGN_OR_RETURN(uint64_t idle, store::ParseDuration(flags.idle_timeout, "--idle-timeout"));
  FAAS_ASSIGN_OR_RETURN(uint64_t queue_wait,
                        store::ParseDuration(flags.queue_timeout, "--queue-timeout"));
  FAAS_ASSIGN_OR_RETURN(double rate, store::ParseRate(flags.rate_limit));
  FAAS_ASSIGN_OR_RETURN(uint64_t api_wait,
                        store::ParseDuration(flags.api_timeout, "--api-timeout"));
  FAAS_ASSIGN_OR_RETURN(uint64_t first_byte,
                        store::ParseDuration(flags.first_byte_timeout, "--first-byte-timeout",
                                             {.zero_allowed = true}));
  if (!flags.options.metrics_listen.empty()) {
    if (auto st = api::CheckListenAddress(flags.options.metrics_listen); !st.ok())
      return MakeError(Errc::kInvalidArgument, "--metrics-listen: " + st.error().message);
  }
  FAAS_ASSIGN_OR_RETURN(uint64_t log_size,
                        ParseSize(flags.log_size, "--log-size", logs::kMinLogBytes));
  FAAS_ASSIGN_OR_RETURN(uint64_t log_rate, ParseSize(flags.log_rate, "--log-rate", 1024));
  FAAS_ASSIGN_OR_RETURN(uint64_t cache_size, ParseSize(flags.cache_size, "--cache-size", 0));
  FAAS_RETURN_IF_ERROR(CheckInsecureRegistries(flags.options.registry.insecure));
  FAAS_ASSIGN_OR_RETURN(pull::AuthFile auth, LoadRegistryAuth(flags.registry_auth));
  server::DaemonOptions options = flags.options;
  FAAS_ASSIGN_OR_RETURN(options.cluster, ClusterOptionsFrom(flags));
  if (!flags.cluster_registry.empty()) {
    if (auto ref = pull::ParseReference(flags.cluster_registry + "/function:v1"); !ref.ok())
      return MakeError(Errc::kInvalidArgument,
                       "--registry: '" + EscapeControl(flags.cluster_registry) +
                           "' is not HOST[:PORT]/PATH: " + ref.error().message);
  }
  options.cluster_registry = flags.cluster_registry;
  options.bird = {.routes_file = flags.bird_routes, .socket = flags.bird_socket};
  options.log_size = log_size;
  options.log_rate = log_rate;
  options.cache_size = cache_size;
  options.log_journald = flags.log_driver == "journald" ||
                         (flags.log_driver.empty() && std::getenv("JOURNAL_STREAM") != nullptr);
  options.registry.auth = std::move(auth);
  options.runtime.program = flags.runtime;  // looked up in PATH when it is a name
  options.defaults.connect_timeout_ms = connect;
  options.defaults.timeout_ms = run;
  options.drain_timeout = std::chrono::milliseconds(drain);
  options.scaling.idle_timeout_ms = idle;
  options.scaling.queue_timeout_ms = queue_wait;
  options.scaling.rate_limit = rate;
  options.scaling.warm_max = std::max(options.scaling.warm, options.scaling.warm_max);
  options.api_timeout = std::chrono::milliseconds(api_wait);
  options.functions.listener.first_byte_timeout = std::chrono::milliseconds(first_byte);
  return options;
}

}  // namespace faas::faasd
