#include "store/state_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "common/file.h"

namespace faas::store {

Status StateDir::Create() const {
  FAAS_RETURN_IF_ERROR(MakeDirs(root_));
  ::chmod(root_.c_str(), 0700);
  for (const auto& dir : {ImagesDir(), BundlesDir(), TmpDir()}) FAAS_RETURN_IF_ERROR(MakeDirs(dir));
  return Ok();
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

Status StateDir::RemoveStale(const std::map<std::string, uint64_t>& live) const {
  std::error_code ec;
  for (const auto& dir : {BundlesDir(), TmpDir()}) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
      FAAS_RETURN_IF_ERROR(RemoveTree(entry.path().string()));
  }
  for (const auto& fn : std::filesystem::directory_iterator(ImagesDir(), ec)) {
    auto it = live.find(fn.path().filename().string());
    if (it == live.end()) {
      FAAS_RETURN_IF_ERROR(RemoveTree(fn.path().string()));
      continue;
    }
    const std::string keep = VersionName(it->second);
    std::error_code inner;
    for (const auto& entry : std::filesystem::directory_iterator(fn.path(), inner)) {
      std::string base = entry.path().filename().string();
      bool stale = base.rfind(".new-", 0) == 0 || base.rfind(".rootfs-", 0) == 0 ||
                   (IsVersionName(base) && base != keep);
      if (stale) FAAS_RETURN_IF_ERROR(RemoveTree(entry.path().string()));
    }
  }
  return Ok();
}

}  // namespace faas::store
