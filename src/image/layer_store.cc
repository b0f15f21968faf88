#include "image/layer_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "common/fd.h"
#include "common/file.h"
#include "image/archive_util.h"

namespace faas::image {
namespace {

constexpr std::string_view kNewPrefix = ".new-";
constexpr std::string_view kOldPrefix = ".old-";
constexpr const char* kRefs = "/refs";

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The names in directory `path` but "." and ".."; ENOENT gives none.
Result<std::vector<std::string>> ListDir(const std::string& path) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), ::closedir);
  if (!dir) {
    if (errno == ENOENT) return std::vector<std::string>{};
    return SysError(errno, "open " + path);
  }
  std::vector<std::string> names;
  while (dirent* ent = ::readdir(dir.get())) {
    std::string_view name = ent->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  return names;
}

}  // namespace

Status LayerStore::Open() {
  FAAS_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  if (::chmod(dir_.c_str(), 0700) != 0) return SysError(errno, "chmod " + dir_);
  FAAS_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir_));
  for (const std::string& name : names) {
    if (StartsWith(name, kNewPrefix) || StartsWith(name, kOldPrefix)) {
      FAAS_RETURN_IF_ERROR(RemoveTree(Path(name)));
    }
  }
  return Ok();
}

Result<std::string> LayerStore::Key(const std::string& diff_id, const IdMapping& ids) {
  FAAS_ASSIGN_OR_RETURN(std::string hex, Sha256HexOfDigest(diff_id));
  std::string key = "sha256-" + hex;
  if (ids.base != 0) key += "-u" + std::to_string(ids.base) + "-" + std::to_string(ids.size);
  return key;
}

Result<ino_t> LayerStore::HolderOf(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return SysError(errno, "stat " + path);
  return st.st_ino;
}

Status LayerStore::AddReference(const std::string& layer_dir, ino_t holder) const {
  const std::string refs = layer_dir + kRefs;
  if (::mkdir(refs.c_str(), 0700) != 0 && errno != EEXIST) return SysError(errno, "mkdir " + refs);
  const std::string ref = refs + "/" + std::to_string(holder);
  UniqueFd fd(::open(ref.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "create " + ref);
  return Ok();
}

Result<bool> LayerStore::Use(const std::string& key, ino_t holder) {
  std::lock_guard lock(mu_);
  const std::string path = Path(key);
  struct stat st;
  // The meta is written last: a layer without it is not complete.
  if (::lstat((path + "/meta").c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return SysError(errno, "stat " + path);
  }
  FAAS_RETURN_IF_ERROR(AddReference(path, holder));
  return true;
}

void LayerStore::Release(const std::string& key, ino_t holder) {
  std::lock_guard lock(mu_);
  (void)::unlink((Path(key) + kRefs + "/" + std::to_string(holder)).c_str());
}

Result<std::string> LayerStore::NewLayerDir() {
  std::string path;
  {
    std::lock_guard lock(mu_);
    path =
        Path(std::string(kNewPrefix) + std::to_string(::getpid()) + "-" + std::to_string(next_++));
  }
  if (::mkdir(path.c_str(), 0700) != 0) return SysError(errno, "mkdir " + path);
  return path;
}

Status LayerStore::Add(const std::string& path, const std::string& key, ino_t holder) {
  bool taken = false;
  {
    std::lock_guard lock(mu_);
    FAAS_RETURN_IF_ERROR(AddReference(path, holder));
    if (::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, Path(key).c_str(), RENAME_NOREPLACE) != 0) {
      if (errno != EEXIST) return SysError(errno, "rename " + path);
      taken = true;
      FAAS_RETURN_IF_ERROR(AddReference(Path(key), holder));
    }
  }
  if (taken) return RemoveTree(path);
  return Ok();
}

std::vector<Error> LayerStore::Collect(const std::function<std::set<ino_t>()>& live) {
  std::vector<Error> errors;
  std::vector<std::string> unused;
  {
    std::lock_guard lock(mu_);
    const std::set<ino_t> holders = live();
    auto names = ListDir(dir_);
    if (!names.ok()) return {std::move(names).error()};
    for (const std::string& name : *names) {
      if (StartsWith(name, kNewPrefix) || StartsWith(name, kOldPrefix)) continue;
      const std::string refs = Path(name) + kRefs;
      auto held = ListDir(refs);
      if (!held.ok()) {
        errors.push_back(std::move(held).error());
        continue;
      }
      bool used = false;
      for (const std::string& ref : *held) {
        char* end = nullptr;
        unsigned long long ino = std::strtoull(ref.c_str(), &end, 10);
        if (end != ref.c_str() && *end == '\0' && holders.count(static_cast<ino_t>(ino)) != 0) {
          used = true;
        } else if (::unlink((refs + "/" + ref).c_str()) != 0 && errno != ENOENT) {
          errors.push_back(SysError(errno, "unlink " + refs + "/" + ref));
        }
      }
      if (used) continue;
      const std::string old = Path(std::string(kOldPrefix) + name);
      if (::rename(Path(name).c_str(), old.c_str()) != 0) {
        errors.push_back(SysError(errno, "rename " + Path(name)));
        continue;
      }
      unused.push_back(old);
    }
  }
  for (const std::string& path : unused) {
    if (auto st = RemoveTree(path); !st.ok()) errors.push_back(std::move(st).error());
  }
  return errors;
}

}  // namespace faas::image
