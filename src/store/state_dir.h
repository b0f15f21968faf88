// The on-disk layout of the state dir (a user-visible contract):
//
//   STATE/registry.json         the deployed functions
//   STATE/images/NAME/rootfs/   the serving rootfs of NAME: a symlink to vN
//   STATE/images/NAME/vN/       version N of NAME's rootfs. A version directory is never
//                               renamed while it exists, so a container that is starting
//                               sees one tree even while a redeploy swaps `rootfs`; a
//                               replaced version is removed after its last request.
//   STATE/images/NAME/.new-*    an import in progress (removed at start-up)
//   STATE/bundles/<id>/         one OCI bundle per request, removed after it
//   STATE/tmp/                  spooled uploads; emptied at start-up
#pragma once

#include <map>
#include <string>

#include "common/error.h"

namespace faas::store {

class StateDir {
 public:
  explicit StateDir(std::string root) : root_(std::move(root)) {}

  // Creates the directories above (mode 0700 for the root) if missing.
  Status Create() const;
  // Removes what a dead faasd left behind: bundles, tmp, imports in progress, and
  // every function directory and version that `live` (the registry: name -> current
  // version) does not name. The registry is the truth: a crash between swapping a
  // `rootfs` link and saving the registry must not leave a half-new function.
  Status RemoveStale(const std::map<std::string, uint64_t>& live) const;

  std::string VersionName(uint64_t version) const { return "v" + std::to_string(version); }
  std::string VersionPath(const std::string& name, uint64_t version) const {
    return FunctionDir(name) + "/" + VersionName(version);
  }
  // Atomically points NAME's `rootfs` at `version` (a new link renamed over the old).
  Status PointRootfsAt(const std::string& name, uint64_t version) const;
  // Removes NAME's `rootfs` link.
  Status UnlinkRootfs(const std::string& name) const;

  const std::string& root() const { return root_; }
  std::string RegistryPath() const { return root_ + "/registry.json"; }
  std::string ImagesDir() const { return root_ + "/images"; }
  std::string FunctionDir(const std::string& name) const { return ImagesDir() + "/" + name; }
  std::string RootfsPath(const std::string& name) const { return FunctionDir(name) + "/rootfs"; }
  std::string BundlesDir() const { return root_ + "/bundles"; }
  std::string BundlePath(const std::string& id) const { return BundlesDir() + "/" + id; }
  std::string TmpDir() const { return root_ + "/tmp"; }

 private:
  std::string root_;
};

}  // namespace faas::store
