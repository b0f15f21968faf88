#include "common/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>

#include "common/fd.h"

namespace faas {
namespace {

Status WriteAll(FileOps& ops, int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ops.Write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(errno, "write");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Ok();
}

Status FsyncDir(FileOps& ops, const std::string& dir) {
  UniqueFd fd(ops.Open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  if (!fd) return SysError(errno, "open " + dir);
  if (ops.Fsync(fd.get()) != 0) return SysError(errno, "fsync " + dir);
  return Ok();
}

Status RemoveAt(int dirfd, const char* name, dev_t dev);

Status RemoveContentsOnDevice(int dirfd, dev_t dev) {
  int dup_fd = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return SysError(errno, "dup");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    ::close(dup_fd);
    return SysError(errno, "fdopendir");
  }
  Status status;
  while (dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    status = RemoveAt(dirfd, name.c_str(), dev);
    if (!status.ok()) break;
  }
  ::closedir(dir);
  return status;
}

Status RemoveAt(int dirfd, const char* name, dev_t dev) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Ok();
    return SysError(errno, std::string("stat ") + name);
  }
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev)
      return MakeError(Errc::kIo, std::string("refusing to remove mount point ") + name);
    UniqueFd child(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child) return SysError(errno, std::string("open ") + name);
    FAAS_RETURN_IF_ERROR(RemoveContentsOnDevice(child.get(), dev));
    if (::unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
      return SysError(errno, std::string("rmdir ") + name);
    return Ok();
  }
  if (::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
    return SysError(errno, std::string("unlink ") + name);
  return Ok();
}

}  // namespace

FileOps& RealFileOps() {
  static FileOps ops;
  return ops;
}

Status AtomicWriteFile(const std::string& path, const std::string& data, int mode, FileOps& ops) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(std::random_device{}());
  UniqueFd fd(ops.Open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) return SysError(errno, "create " + tmp).Wrap("write " + path);
  Status status = WriteAll(ops, fd.get(), data.data(), data.size());
  if (status.ok() && ops.Fsync(fd.get()) != 0) status = SysError(errno, "fsync " + tmp);
  fd.Reset();
  if (status.ok() && ops.Rename(tmp.c_str(), path.c_str()) != 0)
    status = SysError(errno, "rename " + tmp);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return std::move(status).error().Wrap("write " + path);
  }
  return FsyncDir(ops, dir);
}

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return SysError(errno, "open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(errno, "read " + path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes)
      return MakeError(Errc::kTooLarge,
                       path + " is larger than " + std::to_string(max_bytes) + " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status MakeDirs(const std::string& path, int mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return SysError(ec.value(), "mkdir " + path);
  (void)mode;
  return Ok();
}

Status RemoveTree(const std::string& path) {
  std::filesystem::path p(path);
  std::string parent = p.parent_path().empty() ? "." : p.parent_path().string();
  UniqueFd dirfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) {
    if (errno == ENOENT) return Ok();
    return SysError(errno, "open " + parent);
  }
  struct stat st;
  if (::fstatat(dirfd.get(), p.filename().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Ok();
    return SysError(errno, "stat " + path);
  }
  return RemoveAt(dirfd.get(), p.filename().c_str(), st.st_dev);
}

Status RemoveTreeContents(int dirfd) {
  struct stat st;
  if (::fstat(dirfd, &st) != 0) return SysError(errno, "fstat");
  return RemoveContentsOnDevice(dirfd, st.st_dev);
}

}  // namespace faas
