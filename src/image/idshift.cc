#include "image/idshift.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/fd.h"

namespace faas::image {
namespace {

Status ShiftEntry(int dir_fd, const char* name, const struct stat& st, uint32_t base, uint32_t size,
                  const std::string& path) {
  if (st.st_uid >= size || st.st_gid >= size)
    return MakeError(Errc::kBadImage, "/" + path + " is owned by " + std::to_string(st.st_uid) +
                                          ":" + std::to_string(st.st_gid) +
                                          ", outside the user namespace's " + std::to_string(size) +
                                          " ids");
  if (::fchownat(dir_fd, name, base + st.st_uid, base + st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
    return SysError(errno, "chown /" + path);
  // chown clears setuid/setgid, and they stay cleared: on the host such a file would
  // run as the mapped uid for anyone who can reach it. Containers have
  // noNewPrivileges, so inside they would not work anyway.
  if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)) &&
      ::fchmodat(dir_fd, name, st.st_mode & 01777, 0) != 0)
    return SysError(errno, "chmod /" + path);
  return Ok();
}

Status ShiftDir(int dir_fd, uint32_t base, uint32_t size, const std::string& path, int depth) {
  if (depth > 4096) return MakeError(Errc::kBadImage, "directory tree too deep at /" + path);
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  DIR* dir = dup_fd < 0 ? nullptr : ::fdopendir(dup_fd);
  if (dir == nullptr) {
    if (dup_fd >= 0) ::close(dup_fd);
    return SysError(errno, "open /" + path);
  }
  Status status;
  while (dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    std::string child = path.empty() ? name : path + "/" + name;
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      status = SysError(errno, "stat /" + child);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        status = SysError(errno, "open /" + child);
        break;
      }
      status = ShiftDir(sub.get(), base, size, child, depth + 1);
      if (!status.ok()) break;
    }
    status = ShiftEntry(dir_fd, name.c_str(), st, base, size, child);
    if (!status.ok()) break;
  }
  ::closedir(dir);
  return status;
}

}  // namespace

Status ShiftOwnership(const std::string& rootfs_dir, uint32_t base, uint32_t size) {
  UniqueFd root(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return SysError(errno, "open " + rootfs_dir);
  FAAS_RETURN_IF_ERROR(ShiftDir(root.get(), base, size, "", 0));
  struct stat st;
  if (::fstat(root.get(), &st) != 0) return SysError(errno, "stat " + rootfs_dir);
  return ShiftEntry(root.get(), ".", st, base, size, "");
}

}  // namespace faas::image
