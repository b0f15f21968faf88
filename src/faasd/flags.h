// faasd's command line: the flag table (CLI11) and the conversion of what it read
// into the daemon's options.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "server/daemon.h"

namespace faas::faasd {

// The command line as given. Flags that map onto an option directly are already in
// `options`; the rest stay as typed until DaemonOptionsFrom converts them.
struct Flags {
  server::DaemonOptions options;
  std::string log_level = "info";
  std::string runtime = "runc";  // a program name or path
  // Durations as typed (store::ParseDuration): a bare number is ms for the first three,
  // seconds for the others, as it always was.
  std::string connect_timeout = "5s";
  std::string run_timeout = "30s";
  std::string drain_timeout = "10s";
  std::string idle_timeout = "5m";
  std::string queue_timeout = "10s";
  std::string rate_limit = "0";
  std::string first_byte_timeout = "5s";
  std::string api_timeout = "60s";
  // Per-function logs: sizes as typed (bytes, or with K, M or G), and where lines go.
  std::string log_size = "8M";
  std::string cache_size = "1G";
  std::string log_rate = "1M";
  std::string log_driver;  // "file", "journald"; empty: journald too under systemd
  // --registry-auth as given; empty: $REGISTRY_AUTH_FILE, else /root/.docker/config.json
  // (a missing default file: anonymous pulls).
  std::string registry_auth;
  // Cluster membership: --cluster with etcd's client URLs; the node's name (default
  // the host name), advertise address and lease TTL as typed.
  bool cluster = false;
  std::vector<std::string> etcd;
  std::string node_name;
  std::string advertise_address;
  std::string node_ttl = "10s";
  std::string cluster_registry;  // --registry
  std::string bird_routes;
  std::string bird_socket = "/run/bird/bird.ctl";
  // `faasd unpack IMAGE DIR`: import IMAGE into DIR instead of serving.
  bool unpack = false;
  std::string unpack_image;  // a path, or "-" for stdin
  std::string unpack_dir;
  // Set when parsing alone ends the run (--help, --version, a bad or missing
  // argument); CLI11 has then printed what it prints, and this is the exit code.
  std::optional<int> exit_code;
};

// Parses argv (CLI11: ranges are checked here). Prints help, the version or the
// parse error itself; see Flags::exit_code.
Flags ParseFlags(int argc, char** argv);

// The daemon's options: `flags.options` with the durations and the rate limit
// parsed, the runtime looked up in PATH like a shell would (kept as given when not
// found) and --warm-max raised to at least --warm. Fails with kInvalidArgument naming
// the first of --connect-timeout, --run-timeout, --drain-timeout, --idle-timeout,
// --queue-timeout, --rate-limit, --api-timeout and --first-byte-timeout (in that
// order) that does not parse, then --metrics-listen when it is not a HOST:PORT, then
// --log-size, --log-rate and --log-driver, then the registry auth file when it cannot
// be read (a given one) or parsed, or an --insecure-registry that is not HOST[:PORT],
// then the cluster flags (--etcd without --cluster or the reverse, an etcd URL that is
// not http://HOST:PORT, a --node-ttl under 2 s).
// Without --log-driver, journald gets the functions' lines too when $JOURNAL_STREAM
// is set.
Result<server::DaemonOptions> DaemonOptionsFrom(const Flags& flags);

}  // namespace faas::faasd
