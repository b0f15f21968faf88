// Small filesystem helpers with explicit durability and no symlink surprises.
#pragma once

#include <string>

#include "common/error.h"

namespace faas {

// Writes `data` to `path` so that a crash leaves either the old or the new file:
// temp file in the same directory, fsync, rename over `path`, fsync the directory.
Status AtomicWriteFile(const std::string& path, const std::string& data, int mode = 0644);

// Reads a whole file. Fails with kTooLarge when it is bigger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path, size_t max_bytes = 64 << 20);

// mkdir -p with `mode` for the directories it creates.
Status MakeDirs(const std::string& path, int mode = 0755);

// rm -rf that never follows symlinks and never crosses into another mount.
// A missing `path` is success.
Status RemoveTree(const std::string& path);

// Removes everything inside the directory open at `dirfd`, keeping the directory.
Status RemoveTreeContents(int dirfd);

}  // namespace faas
