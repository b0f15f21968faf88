#include "image/workdir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>
#include <vector>

#include "common/fd.h"
#include "common/text.h"
#include "image/layer.h"

namespace faas::image {
namespace {

Error Refuse(const std::string& working_dir, const std::string& why) {
  return MakeError(Errc::kBadImage,
                   "the image's WorkingDir '" + EscapeControl(working_dir) + "' " + why);
}

// Creates `name` in `parent_fd` as a 0755 directory; an existing entry is left alone for
// the caller to check. The explicit chmod undoes the process umask.
Status MakeMissingDir(int parent_fd, const std::string& name, const std::string& shown,
                      uid_t owner) {
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return Ok();
  if (errno != ENOENT) return SysError(errno, "stat " + shown);
  if (::mkdirat(parent_fd, name.c_str(), 0755) != 0) return SysError(errno, "mkdir " + shown);
  UniqueFd dir(::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir || ::fchmod(dir.get(), 0755) != 0) return SysError(errno, "chmod " + shown);
  if (owner != 0 && ::fchown(dir.get(), owner, owner) != 0)
    return SysError(errno, "chown " + shown);
  return Ok();
}

// The components of an absolute path, without empty and "." ones.
std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> parts;
  std::istringstream in(path);
  for (std::string part; std::getline(in, part, '/');) {
    if (!part.empty() && part != ".") parts.push_back(part);
  }
  return parts;
}

}  // namespace

Status PrepareWorkingDir(const std::string& rootfs_dir, const std::string& working_dir,
                         uid_t owner) {
  if (working_dir.empty()) return Ok();
  if (working_dir[0] != '/') return Refuse(working_dir, "is not an absolute path");
  const std::vector<std::string> parts = Components(working_dir);
  for (const std::string& part : parts) {
    if (part == "..") return Refuse(working_dir, "has a '..' component");
  }
  UniqueFd root(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return SysError(errno, "open " + rootfs_dir);
  std::string prefix;
  UniqueFd parent;
  FAAS_ASSIGN_OR_RETURN(parent, OpenDirBeneath(root.get(), ""));
  for (const std::string& part : parts) {
    prefix += (prefix.empty() ? "" : "/") + part;
    const std::string shown = EscapeControl("/" + prefix);
    FAAS_RETURN_IF_ERROR(MakeMissingDir(parent.get(), part, shown, owner));
    Result<UniqueFd> dir = OpenDirBeneath(root.get(), prefix);
    if (!dir.ok()) {
      const int err = dir.error().sys_errno;
      if (err == EXDEV || err == ELOOP)
        return Refuse(working_dir, "leads out of the image (at " + shown + ")");
      if (err == ENOENT || err == ENOTDIR)
        return Refuse(working_dir, "is not a directory in the image (at " + shown + ")");
      return std::move(dir).error().Wrap("the image's WorkingDir");
    }
    parent = std::move(dir).value();
  }
  return Ok();
}

}  // namespace faas::image
