// Small filesystem helpers with explicit durability and no symlink surprises.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/error.h"

namespace faas {

// The syscalls that durable writes make, behind a narrow seam so tests can make any
// one of them fail (ENOSPC on write, EIO on fsync, ...). Each returns what the
// syscall returns and leaves errno set on failure.
class FileOps {
 public:
  virtual ~FileOps() = default;
  virtual int Open(const char* path, int flags, int mode) { return ::open(path, flags, mode); }
  virtual ssize_t Write(int fd, const void* data, size_t size) { return ::write(fd, data, size); }
  virtual int Fsync(int fd) { return ::fsync(fd); }
  virtual int Rename(const char* from, const char* to) { return ::rename(from, to); }
};

// The real syscalls.
FileOps& RealFileOps();

// Writes `data` to `path` so that a crash leaves either the old or the new file:
// temp file in the same directory, fsync, rename over `path`, fsync the directory.
// On failure `path` is untouched and the temp file is removed.
Status AtomicWriteFile(const std::string& path, const std::string& data, int mode = 0644,
                       FileOps& ops = RealFileOps());

// Reads a whole file. Fails with kTooLarge when it is bigger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path, size_t max_bytes = 64 << 20);

// mkdir -p. Each directory it creates gets exactly `mode` (the umask does not apply);
// existing ones are left as they are. Fails when a component is not a directory.
Status MakeDirs(const std::string& path, int mode = 0755);

// rm -rf that never follows symlinks and never crosses into another mount (a
// directory on another device is an error). A missing `path` is success.
// Uses a constant number of fds whatever the depth of the tree (memory grows with
// the depth); fails rather than leave the tree if a directory being removed is moved
// elsewhere meanwhile.
Status RemoveTree(const std::string& path);

// Removes everything inside the directory open at `dirfd` (borrowed), keeping the
// directory, with the guarantees of RemoveTree.
Status RemoveTreeContents(int dirfd);

}  // namespace faas
