// Shifting the ownership of an unpacked rootfs for a user-namespace container:
// container uid/gid N becomes host id base+N. Thread-safe for distinct trees.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace faas::image {

// Adds `base` to the owner and group of every entry under `rootfs_dir` (the
// directory itself included), never following symlinks, and clears setuid/setgid
// bits. Ids must be below `size`: kBadImage otherwise (the id could not be mapped).
Status ShiftOwnership(const std::string& rootfs_dir, uint32_t base, uint32_t size);

}  // namespace faas::image
