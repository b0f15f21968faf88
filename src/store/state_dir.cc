#include "store/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"

namespace faas::store {

namespace {

// The pid the holder wrote; a holder that has just taken the lock may not have
// written it yet: read again a few times.
std::string HolderPid(int fd) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    char buf[32];
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      std::string pid(buf, static_cast<size_t>(n));
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos) return pid;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return "unknown";
}

}  // namespace

Result<UniqueFd> LockDir(const std::string& dir) {
  const std::string path = dir + "/faasd.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "open " + path);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return SysError(errno, "lock " + path);
    return MakeError(Errc::kConflict,
                     "another faasd (pid " + HolderPid(fd.get()) + ") is using " + dir);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0) return SysError(errno, "truncate " + path);
  FAAS_RETURN_IF_ERROR_CTX(WriteAll(fd.get(), pid), "write " + path);
  return fd;
}

Status StateDir::SetAccess(const std::string& path, gid_t group, mode_t mode) const {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError(errno, "open " + path);
  if (::fchown(fd.get(), 0, group) != 0) return SysError(errno, "chown " + path);
  if (::fchmod(fd.get(), mode) != 0) return SysError(errno, "chmod " + path);
  return Ok();
}

Status StateDir::SetImagesAccess(const std::string& path) const {
  return SetAccess(path, rootfs_group_.value_or(0), rootfs_group_ ? 0710 : 0700);
}

Status StateDir::Create() const {
  for (const auto& dir : {root_, ImagesDir(), TmpDir()}) FAAS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  FAAS_RETURN_IF_ERROR(MakeDirs(BundlesDir()));
  FAAS_RETURN_IF_ERROR(SetAccess(root_, 0, rootfs_group_ ? 0711 : 0700));
  FAAS_RETURN_IF_ERROR(SetAccess(TmpDir(), 0, 0700));
  FAAS_RETURN_IF_ERROR(SetImagesAccess(ImagesDir()));
  std::error_code ec;
  for (const auto& fn : std::filesystem::directory_iterator(ImagesDir(), ec)) {
    if (fn.is_directory(ec) && !fn.is_symlink(ec))
      FAAS_RETURN_IF_ERROR(SetImagesAccess(fn.path().string()));
  }
  if (ec) return SysError(ec.value(), "list " + ImagesDir());
  return Ok();
}

Status StateDir::CreateFunctionDir(const std::string& name) const {
  const std::string dir = FunctionDir(name);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) return SysError(errno, "mkdir " + dir);
    return Ok();
  }
  return SetImagesAccess(dir);
}

namespace {

bool IsVersionName(const std::string& base) {
  return base.size() > 1 && base[0] == 'v' &&
         base.find_first_not_of("0123456789", 1) == std::string::npos;
}

}  // namespace

Status StateDir::PointRootfsAt(const std::string& name, uint64_t version) const {
  std::string tmp = FunctionDir(name) + "/.rootfs-" + VersionName(version);
  ::unlink(tmp.c_str());
  if (::symlink(VersionName(version).c_str(), tmp.c_str()) != 0)
    return SysError(errno, "symlink " + tmp);
  if (::rename(tmp.c_str(), RootfsPath(name).c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return SysError(err, "rename " + tmp);
  }
  return Ok();
}

Status StateDir::UnlinkRootfs(const std::string& name) const {
  if (::unlink(RootfsPath(name).c_str()) != 0 && errno != ENOENT)
    return SysError(errno, "unlink " + RootfsPath(name));
  return Ok();
}

std::set<ino_t> StateDir::VersionInodes() const {
  std::set<ino_t> inodes;
  std::error_code ec;
  for (const auto& fn : std::filesystem::directory_iterator(ImagesDir(), ec)) {
    std::error_code inner;
    for (const auto& entry : std::filesystem::directory_iterator(fn.path(), inner)) {
      struct stat st;
      if (::lstat(entry.path().c_str(), &st) == 0 && S_ISDIR(st.st_mode)) inodes.insert(st.st_ino);
    }
  }
  return inodes;
}

std::vector<Error> StateDir::RemoveStale(
    const std::map<std::string, std::set<uint64_t>>& live) const {
  std::vector<Error> left;
  auto remove = [&left](const std::filesystem::path& path) {
    if (Status st = RemoveTree(path.string()); !st.ok()) left.push_back(std::move(st).error());
  };
  std::error_code ec;
  for (const auto& dir : {BundlesDir(), TmpDir()}) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) remove(entry.path());
  }
  for (const auto& fn : std::filesystem::directory_iterator(ImagesDir(), ec)) {
    auto it = live.find(fn.path().filename().string());
    if (it == live.end()) {
      remove(fn.path());
      continue;
    }
    std::set<std::string> keep;
    for (uint64_t version : it->second) keep.insert(VersionName(version));
    std::error_code inner;
    for (const auto& entry : std::filesystem::directory_iterator(fn.path(), inner)) {
      std::string base = entry.path().filename().string();
      bool stale = base.rfind(".new-", 0) == 0 || base.rfind(".rootfs-", 0) == 0 ||
                   (IsVersionName(base) && !keep.count(base));
      if (stale) remove(entry.path());
    }
  }
  return left;
}

}  // namespace faas::store
