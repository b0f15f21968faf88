// OCI runtime bundles: the config.json faasd hands to runc for one request.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"

namespace faas::runtime {

// Where the handler finds its control socket inside the container.
inline constexpr char kControlSocketInContainer[] = "/control.sock";
inline constexpr uint32_t kUsernsSize = 65536;

struct ContainerSpec {
  std::string rootfs;             // absolute host path, mounted read-only
  std::vector<std::string> args;  // the image's ENTRYPOINT + CMD
  std::vector<std::string> env;   // the image's Env ("K=V")
  std::string cwd;                // the image's WorkingDir; "/" when empty
  std::string control_socket{};   // host path, bind-mounted at /control.sock
  std::string hostname = "faas";
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t memory_bytes = 512ull << 20;
  uint64_t cpu_quota_us = 100000;  // per 100 ms period: 100000 is one CPU
  int64_t pids_limit = 64;
  uint64_t nofile_limit = 1024;
  uint64_t run_timeout_ms = 30000;  // told to the handler as FAAS_TIMEOUT_MS
  uint32_t reuse = 1;               // clients one container may serve, as FAAS_REUSE
  // When not 0: a user namespace mapping container ids 0..kUsernsSize-1 to host
  // ids userns_base.., with the rootfs owned accordingly.
  uint32_t userns_base = 0;
  std::string cgroups_path{};  // e.g. "/faasd/<id>"; empty lets the runtime choose
};

// The OCI config: pid/net/ipc/uts/mount/cgroup namespaces, no capabilities,
// noNewPrivileges, masked and read-only kernel paths, tmpfs /tmp, limits.
nlohmann::json MakeOciConfig(const ContainerSpec& spec);

// Writes DIR/config.json (DIR must exist). Not fsynced: a bundle lives for one request.
Status WriteBundle(const std::string& dir, const ContainerSpec& spec);

// Creates the mount points the config needs (/proc /dev /sys /tmp and an empty
// /control.sock) inside a freshly imported rootfs, so runc never writes into a
// shared read-only rootfs at request time. Existing entries are left alone; what is
// made is owned by `owner` (a user namespace's root on the host; 0 without one).
Status PrepareRootfs(const std::string& rootfs, uid_t owner = 0);

}  // namespace faas::runtime
