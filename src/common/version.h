// The release of faasd and faas (the project's version in CMake), and the version of the
// control API they speak.
#pragma once

#ifndef FAAS_VERSION
#error "FAAS_VERSION comes from the build (faas_common's compile definitions)"
#endif

namespace faas {

inline constexpr char kVersion[] = FAAS_VERSION;

// GET /api/version answers it as "api". Raised when a route changes in a way an older
// client would misread; new routes and new JSON fields keep it.
inline constexpr int kApiVersion = 1;

}  // namespace faas
