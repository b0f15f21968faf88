#include "common/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <optional>
#include <random>
#include <vector>

#include "common/fd.h"
#include "common/io.h"

namespace faas {
namespace {

Status FsyncDir(FileOps& ops, const std::string& dir) {
  UniqueFd fd(ops.Open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  if (!fd) return SysError(errno, "open " + dir);
  if (ops.Fsync(fd.get()) != 0) return SysError(errno, "fsync " + dir);
  return Ok();
}

// A directory on the way down from the top of a tree being removed.
struct Level {
  std::string name;  // its name in the level above (empty for the top)
  ino_t ino;
};

std::string PathOf(const std::vector<Level>& levels, const std::string& name) {
  std::string out;
  for (size_t i = 1; i < levels.size(); ++i) out += levels[i].name + "/";
  return out + name;
}

Error RemoveError(int err, const char* what, const std::vector<Level>& levels,
                  const std::string& name) {
  return SysError(err, std::string(what) + " " + PathOf(levels, name));
}

// Unlinks the non-directories of the directory at `fd` (borrowed). Returns the name of
// the first subdirectory met, or nothing once the directory holds no entry at all.
Result<std::optional<std::string>> UnlinkUntilSubdir(int fd, const std::vector<Level>& levels) {
  int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return RemoveError(errno, "dup", levels, ".");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    ::close(dup_fd);
    return RemoveError(errno, "fdopendir", levels, ".");
  }
  Result<std::optional<std::string>> result = std::optional<std::string>();
  while (dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      result = RemoveError(errno, "stat", levels, name);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      result = std::optional<std::string>(std::move(name));
      break;
    }
    if (::unlinkat(fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      result = RemoveError(errno, "unlink", levels, name);
      break;
    }
  }
  ::closedir(dir);
  return result;
}

// Opens `name` below `parent` for the walk down. Null when it is gone or is no longer
// a directory (the next scan of `parent` deals with what is there now).
Result<UniqueFd> OpenSubdir(int parent, const std::string& name, dev_t dev,
                            std::vector<Level>* levels) {
  UniqueFd child(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!child) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return UniqueFd();
    return RemoveError(errno, "open", *levels, name);
  }
  struct stat st;
  if (::fstat(child.get(), &st) != 0) return RemoveError(errno, "stat", *levels, name);
  if (st.st_dev != dev) {
    return MakeError(Errc::kIo, "refusing to remove mount point " + PathOf(*levels, name));
  }
  levels->push_back({name, st.st_ino});
  return child;
}

// Goes back up from the (now empty) last level and removes it. The parent is reached
// through "..", so it is checked to be the directory we came down from: a directory
// moved away meanwhile must not lead the walk out of the tree.
Result<UniqueFd> RemoveLevel(UniqueFd current, dev_t dev, std::vector<Level>* levels) {
  UniqueFd parent(::openat(current.get(), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!parent) return RemoveError(errno, "open parent of", *levels, "");
  struct stat st;
  if (::fstat(parent.get(), &st) != 0) return RemoveError(errno, "stat parent of", *levels, "");
  const Level& above = (*levels)[levels->size() - 2];
  if (st.st_dev != dev || st.st_ino != above.ino) {
    return MakeError(Errc::kIo, "directory " + PathOf(*levels, "") + " moved during its removal");
  }
  current.Reset();
  const std::string name = levels->back().name;
  levels->pop_back();
  if (::unlinkat(parent.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
    return RemoveError(errno, "rmdir", *levels, name);
  return parent;
}

// Empties the directory at `top` (borrowed) depth first, without recursion: one
// directory of the tree is open at a time, so the fds used do not grow with the depth.
// Nothing on another device than `top` is entered.
// A directory is scanned again from its start after each subdirectory is removed.
Status EmptyTree(int top) {
  struct stat st;
  if (::fstat(top, &st) != 0) return SysError(errno, "fstat");
  const dev_t dev = st.st_dev;
  std::vector<Level> levels{{"", st.st_ino}};
  UniqueFd current(::fcntl(top, F_DUPFD_CLOEXEC, 0));
  if (!current) return SysError(errno, "dup");
  for (;;) {
    FAAS_ASSIGN_OR_RETURN(std::optional<std::string> subdir,
                          UnlinkUntilSubdir(current.get(), levels));
    if (subdir) {
      FAAS_ASSIGN_OR_RETURN(UniqueFd child, OpenSubdir(current.get(), *subdir, dev, &levels));
      if (child) current = std::move(child);
      continue;
    }
    if (levels.size() == 1) return Ok();
    FAAS_ASSIGN_OR_RETURN(current, RemoveLevel(std::move(current), dev, &levels));
  }
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
  Status status = WriteAllWith(
      [&ops](int out, const void* p, size_t n) { return ops.Write(out, p, n); }, fd.get(), data);
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
  auto text = ReadAll(fd.get(), max_bytes);
  if (!text.ok()) return std::move(text).error().Wrap(path);
  return text;
}

Status MakeDirs(const std::string& path, int mode) {
  std::filesystem::path target = std::filesystem::path(path).lexically_normal();
  std::filesystem::path prefix;
  for (const auto& part : target) {
    prefix /= part;
    if (part.empty() || part == "/") continue;
    if (::mkdir(prefix.c_str(), 0700) == 0) {
      // chmod, not mkdir's mode: the umask must not take away what `mode` grants.
      if (::chmod(prefix.c_str(), static_cast<mode_t>(mode)) != 0)
        return SysError(errno, "chmod " + prefix.string());
      continue;
    }
    struct stat st;
    if (errno != EEXIST) return SysError(errno, "mkdir " + prefix.string());
    if (::stat(prefix.c_str(), &st) != 0) return SysError(errno, "stat " + prefix.string());
    if (!S_ISDIR(st.st_mode)) return SysError(ENOTDIR, "mkdir " + prefix.string());
  }
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
  const std::string base = p.filename().string();
  const char* name = base.c_str();
  struct stat st;
  if (::fstatat(dirfd.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Ok();
    return SysError(errno, "stat " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd top(::openat(dirfd.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!top) return SysError(errno, "open " + path);
    Status emptied = EmptyTree(top.get());
    if (!emptied.ok()) return std::move(emptied).error().Wrap("remove " + path);
    top.Reset();
    if (::unlinkat(dirfd.get(), name, AT_REMOVEDIR) != 0 && errno != ENOENT)
      return SysError(errno, "rmdir " + path);
    return Ok();
  }
  if (::unlinkat(dirfd.get(), name, 0) != 0 && errno != ENOENT)
    return SysError(errno, "unlink " + path);
  return Ok();
}

Status RemoveTreeContents(int dirfd) { return EmptyTree(dirfd); }

}  // namespace faas
