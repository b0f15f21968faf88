// The seccomp profile of every function container: an allowlist in the spirit of
// Docker's default profile. Everything else fails with EPERM. socket() is allowed for
// AF_UNIX, AF_INET and AF_INET6 only and socketpair() for AF_UNIX only; other families
// fail with EAFNOSUPPORT. Only the x86_64 and x32 system call ABIs are in the filter, not
// i386 (whose socketcall(2) hides the family from seccomp), so 32-bit x86 handlers do not
// run. runc loads it just before it executes the handler.
#pragma once

#include <nlohmann/json.hpp>

namespace faas::runtime {

// The `linux.seccomp` section of an OCI config.
const nlohmann::json& SeccompProfile();

}  // namespace faas::runtime
