// The on-disk layout of the state dir (a user-visible contract):
//
//   STATE/faasd.lock            held (flock) by the faasd using STATE, its pid inside;
//                               RUN_DIR/faasd.lock likewise. Left in place on exit.
//   STATE/registry.json         the deployed functions
//   STATE/images/NAME/rootfs/   the serving rootfs of NAME: a symlink to vN
//   STATE/images/NAME/vN/       version N of NAME's rootfs. A version directory is never
//                               renamed while it exists, so a container that is starting
//                               sees one tree even while a redeploy swaps `rootfs`. The
//                               serving version and the last ones before it are kept
//                               (faasd --keep-versions); one that falls out of that set
//                               is removed after its last request.
//   STATE/images/NAME/.new-*    an import in progress (removed at start-up)
//   STATE/layers/               the layers of the versions above, by diff_id, read-only
//                               and shared: a version's files are hard links to them
//                               (image/layer_store.h). A layer goes when no version
//                               directory uses it any more.
//   STATE/bundles/<id>/         one OCI bundle per request, removed after it
//   STATE/tmp/                  spooled uploads; emptied at start-up
//   STATE/logs/NAME/            NAME's log (logs/function_log.h), root's alone (0700);
//                               removed with NAME and, at start-up, when NAME is gone
//
// Access: STATE/images/NAME/vN is the root of NAME's containers and keeps the image's
// mode, so what guards the image's files on the host is the directories above it.
// They are root's alone (0700), except that with a user namespace the container's
// root (host uid and gid `rootfs_group`) must traverse them to its rootfs before
// pivot_root: STATE is then 0711 and images/ and images/NAME are root:rootfs_group
// 0710. STATE/tmp and the imports in progress are root's alone (0700).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace faas::store {

// Takes the lock of one faasd on `dir` (STATE or RUN_DIR): an exclusive flock on
// DIR/faasd.lock (created 0600 if missing, never removed: a removed lock file
// races a faasd taking it), with this process's pid written into it. The lock
// lasts as long as the returned fd (O_CLOEXEC). kConflict, "another faasd (pid N)
// is using DIR", when another process holds it; `dir` must exist.
Result<UniqueFd> LockDir(const std::string& dir);

class StateDir {
 public:
  // `rootfs_group`: the host gid of a user namespace's root, given traverse access
  // (see above); none: no user namespace.
  explicit StateDir(std::string root, std::optional<gid_t> rootfs_group = std::nullopt)
      : root_(std::move(root)), rootfs_group_(rootfs_group) {}

  // Creates the directories above if missing and gives STATE, images/, each existing
  // images/NAME and tmp/ the owner and mode above, whatever an earlier faasd (or an
  // earlier --userns setting) left: run it at every start. bundles/ is created with
  // mode 0755 and otherwise left alone. Must run as root.
  Status Create() const;
  // Creates images/NAME with the owner and mode above if it is missing.
  Status CreateFunctionDir(const std::string& name) const;
  // Removes what a dead faasd left behind: bundles, tmp, imports in progress, and
  // every function directory and version that `live` (the registry: name -> its
  // versions, serving and kept) does not name. The registry is the truth: a crash
  // between swapping a `rootfs` link and saving the registry must not leave a
  // half-new function. What cannot be removed is skipped: the returned errors (empty
  // when all went) each name the path that is left.
  std::vector<Error> RemoveStale(const std::map<std::string, std::set<uint64_t>>& live) const;

  std::string VersionName(uint64_t version) const { return "v" + std::to_string(version); }
  std::string VersionPath(const std::string& name, uint64_t version) const {
    return FunctionDir(name) + "/" + VersionName(version);
  }
  // The inode numbers of every version directory that exists (serving, kept, retired
  // and in progress), which name the layers' references.
  std::set<ino_t> VersionInodes() const;
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
  std::string LogsDir() const { return root_ + "/logs"; }
  std::string LayersDir() const { return root_ + "/layers"; }

 private:
  // Gives the directory at `path` (not a symlink) root as owner, `group` and `mode`.
  Status SetAccess(const std::string& path, gid_t group, mode_t mode) const;
  // The owner and mode of images/ and images/NAME.
  Status SetImagesAccess(const std::string& path) const;

  std::string root_;
  std::optional<gid_t> rootfs_group_;
};

}  // namespace faas::store
