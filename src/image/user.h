// Resolving an image's User ("app", "1000", "app:staff", "1000:50") to numeric ids
// through the rootfs's own /etc/passwd and /etc/group, never following a link out
// of the rootfs. Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace faas::image {

struct UserIds {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// An empty `user` is root (0:0). A numeric uid without a group takes the gid of its
// passwd entry, or 0 when it has none. Unknown names are kBadImage.
Result<UserIds> ResolveUser(const std::string& rootfs_dir, const std::string& user);

}  // namespace faas::image

namespace faas::image {

// Checks that the image's command exists in the rootfs as runc would look it up:
// a path as is, a bare name through the PATH in `env` (or the default PATH).
// Symlinks resolve inside the rootfs. kBadImage with a clear message otherwise.
Status CheckCommand(const std::string& rootfs_dir, const std::vector<std::string>& cmd,
                    const std::vector<std::string>& env);

}  // namespace faas::image
