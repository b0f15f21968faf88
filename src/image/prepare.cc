#include "image/prepare.h"

#include <sys/stat.h>

#include <cerrno>

#include "image/idshift.h"
#include "image/workdir.h"

namespace faas::image {

Result<UserIds> PrepareImage(const std::string& rootfs_dir, const ImageConfig& config,
                             const std::vector<std::string>& env, IdMapping ids) {
  FAAS_ASSIGN_OR_RETURN(UserIds user, ResolveUser(rootfs_dir, config.user));
  FAAS_RETURN_IF_ERROR(CheckCommand(rootfs_dir, config.cmd, env));
  FAAS_RETURN_IF_ERROR(PrepareWorkingDir(rootfs_dir, config.working_dir));
  // The import was root's alone; as the container's `/` it needs the usual mode, or
  // a handler that is not root could not traverse it.
  if (::chmod(rootfs_dir.c_str(), 0755) != 0) return SysError(errno, "chmod " + rootfs_dir);
  if (ids.base == 0) return user;
  if (user.uid >= ids.size || user.gid >= ids.size)
    return MakeError(Errc::kBadImage,
                     "the image's user " + config.user + " is outside the user namespace's ids");
  FAAS_RETURN_IF_ERROR(ShiftOwnership(rootfs_dir, ids.base, ids.size));
  return user;
}

}  // namespace faas::image
