// The image's WorkingDir, made to exist in the rootfs when the image is imported: runc
// would otherwise create a missing one at request time, inside the rootfs that every
// request of the function shares. Thread-safe for distinct trees.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/error.h"

namespace faas::image {

// Makes sure `working_dir` (the image config's WorkingDir; "" means "/", nothing to do) is
// a directory in the tree at `rootfs_dir`. Every component is resolved beneath the tree
// (OpenDirBeneath: relative symlinks are followed while they stay beneath it); missing ones
// are created owned by `owner` (root, as Docker creates them, or a user namespace's root
// on the host) with mode 0755. kBadImage, naming the WorkingDir, when it is not absolute, has a
// ".." component, or a component leads out of the tree or exists but is not a directory; the tree
// then holds the directories created so far. kIo for our own filesystem failures.
Status PrepareWorkingDir(const std::string& rootfs_dir, const std::string& working_dir,
                         uid_t owner = 0);

}  // namespace faas::image
