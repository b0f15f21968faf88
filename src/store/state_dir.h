// The on-disk layout of the state dir (a user-visible contract):
//
//   STATE/registry.json         the deployed functions
//   STATE/images/NAME/rootfs/   the serving rootfs of NAME
//   STATE/images/NAME/.new-*    an import in progress (removed at start-up)
//   STATE/images/NAME/.old-*    a replaced rootfs still used by running requests
//   STATE/bundles/<id>/         one OCI bundle per request, removed after it
//   STATE/tmp/                  spooled uploads; emptied at start-up
#pragma once

#include <string>

#include "common/error.h"

namespace faas::store {

class StateDir {
 public:
  explicit StateDir(std::string root) : root_(std::move(root)) {}

  // Creates the directories above (mode 0700 for the root) if missing.
  Status Create() const;
  // Removes what a dead faasd left behind: bundles, tmp, .new-* and .old-* rootfs dirs.
  Status RemoveStale() const;

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
