// The seccomp profile of every function container: an allowlist in the spirit of
// Docker's default profile. Everything else fails with EPERM. runc loads it just
// before it executes the handler.
#pragma once

#include <nlohmann/json.hpp>

namespace faas::runtime {

// The `linux.seccomp` section of an OCI config.
const nlohmann::json& SeccompProfile();

}  // namespace faas::runtime
