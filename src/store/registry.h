// The registry of deployed functions, persisted as STATE/registry.json:
//   {"NAME": {"ip": "10.0.0.10", "rootfs": ".../images/NAME/rootfs", "cmd": ["..."], ...,
//             "versions": [{...}, ...]}}
// Each function's object is the record of its serving version; "versions" holds the
// records of its other kept versions (each with its own version, image and settings),
// the one that served most recently first. A file without "versions" keeps none.
// Not thread-safe: owned by the daemon's event loop, which serialises every change.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file.h"
#include "store/limits.h"

namespace faas::store {

struct FunctionRecord {
  std::string ip;
  std::string rootfs;
  std::vector<std::string> cmd;
  std::vector<std::string> env;        // what the containers get: image_env + the deploy's
  std::vector<std::string> image_env;  // the image's own Env (config.Env): what a push writes
  std::string working_dir;
  std::string user;  // as the image says it
  uint32_t uid = 0;  // `user` resolved against the rootfs at deploy time
  uint32_t gid = 0;
  FunctionLimits limits;
  ScalingOptions scaling;
  uint32_t userns_base = 0;  // rootfs owned by base+id for a user namespace; 0: none
  uint64_t version = 1;      // bumped on every redeploy
  std::string deployed_at;   // RFC 3339, UTC
  // "sha256:<hex>" of the image's config blob: the image ID `docker images` and
  // `podman images` show. Empty in records of a faasd that did not record it.
  std::string image_digest;
  // A version pulled from a registry: the reference as deployed (canonical, e.g.
  // "docker.io/library/alpine:latest") and the manifest digest it resolved to. Empty
  // for an image archive.
  std::string image_ref;
  std::string manifest_digest;
  std::string platform;  // of the pull ("linux/amd64"): the one taken from an index
  // The layer `faas push` made of this version's tree ("sha256:<hex>" of the gzip blob
  // and of its tar, its size), kept in the layer cache while it stays there: a second
  // push takes it from there instead of writing it again. Empty before a push.
  std::string layer_digest = {};
  std::string layer_diff_id = {};
  uint64_t layer_size = 0;
  // The deploy options in force (DeployOptions::set): given or carried over.
  nlohmann::json options = nlohmann::json::object();
};

nlohmann::json ToJson(const FunctionRecord& record);
Result<FunctionRecord> FunctionFromJson(const nlohmann::json& json);

class Registry {
 public:
  // `ops` (borrowed, must outlive the registry) is the seam for fault-injection tests.
  explicit Registry(std::string path, FileOps& ops = RealFileOps())
      : path_(std::move(path)), ops_(&ops) {}

  // Reads the file; a missing file is an empty registry. A corrupt file is an error
  // (never silently replaced: it may be the only record of what was deployed).
  Status Load();
  // Writes atomically (temp file, fsync, rename, fsync dir). On failure the old file is intact.
  Status Save() const;

  // The serving version of each function.
  const std::map<std::string, FunctionRecord>& functions() const { return functions_; }
  const FunctionRecord* Find(const std::string& name) const;
  void Put(const std::string& name, FunctionRecord record) { functions_[name] = std::move(record); }
  // The function's other kept versions, the one that served most recently first.
  const std::vector<FunctionRecord>& Kept(const std::string& name) const;
  void PutKept(const std::string& name, std::vector<FunctionRecord> kept);
  // The highest version number of `name`, serving or kept; 0 when there is none.
  uint64_t LatestVersion(const std::string& name) const;
  // Forgets the function and all its versions.
  void Erase(const std::string& name) {
    functions_.erase(name);
    kept_.erase(name);
  }
  nlohmann::json ToJson() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FileOps* ops_;
  std::map<std::string, FunctionRecord> functions_;
  std::map<std::string, std::vector<FunctionRecord>> kept_;  // no empty vectors
};

}  // namespace faas::store
