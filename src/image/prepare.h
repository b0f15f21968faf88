// What an imported rootfs needs before it may serve: the checks that need the tree
// (the user exists, the command can be found, the working directory can be made)
// and the changes a container needs (a traversable `/`, ownership for a user
// namespace). Thread-safe; runs on a worker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "image/config.h"
#include "image/layer.h"  // IdMapping
#include "image/user.h"

namespace faas::image {

// Checks and prepares `rootfs_dir` for `config`, whose command is looked up with
// `env` (the image's Env merged with the deploy's): returns the resolved user.
// kBadImage with a message for the deployer when the image cannot serve.
Result<UserIds> PrepareImage(const std::string& rootfs_dir, const ImageConfig& config,
                             const std::vector<std::string>& env, IdMapping ids);

}  // namespace faas::image
