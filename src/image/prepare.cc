#include "image/prepare.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "image/workdir.h"

namespace faas::image {

Result<UserIds> PrepareImage(const std::string& rootfs_dir, const ImageConfig& config,
                             const std::vector<std::string>& env, IdMapping ids) {
  FAAS_ASSIGN_OR_RETURN(UserIds user, ResolveUser(rootfs_dir, config.user));
  FAAS_RETURN_IF_ERROR(CheckCommand(rootfs_dir, config.cmd, env));
  FAAS_RETURN_IF_ERROR(PrepareWorkingDir(rootfs_dir, config.working_dir, ids.base));
  // The import was root's alone; as the container's `/` it needs the usual mode, or
  // a handler that is not root could not traverse it.
  if (::chmod(rootfs_dir.c_str(), 0755) != 0) return SysError(errno, "chmod " + rootfs_dir);
  if (ids.base == 0) return user;
  if (user.uid >= ids.size || user.gid >= ids.size)
    return MakeError(Errc::kBadImage,
                     "the image's user " + config.user + " is outside the user namespace's ids");
  // The layers were written with mapped owners already (ImportLimits::ids); only the
  // tree's own root is the import's.
  if (::chown(rootfs_dir.c_str(), ids.base, ids.base) != 0)
    return SysError(errno, "chown " + rootfs_dir);
  return user;
}

}  // namespace faas::image
