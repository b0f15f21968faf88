// The image configuration blob: what to run, and the digests of the unpacked layers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::image {

// How the function's process is started, as the image describes it.
struct ImageConfig {
  std::vector<std::string>
      cmd;  // Entrypoint + Cmd from the image config; {"/bin/sh"} if both empty
  std::vector<std::string> env;  // config.Env, "K=V", each valid (ValidateEnvEntry)
  std::string working_dir;       // config.WorkingDir ("" if unset)
  std::string user;              // config.User (stored, not applied yet)
  // "sha256:<hex>" of the config blob itself: the image ID docker and podman show.
  // Set by ImportImage; ParseImageConfig leaves it empty.
  std::string digest;
};

struct ParsedConfig {
  ImageConfig config;
  // rootfs.diff_ids: "sha256:<hex>" of each layer's uncompressed tar, bottom layer first.
  std::vector<std::string> diff_ids;
};

// Parses an OCI / Docker image configuration JSON document (untrusted).
// Every field may be missing or null; a field of the wrong type, a malformed
// diff_id, an Env entry ValidateEnvEntry (common/text.h) refuses or invalid JSON is
// kBadImage. Never throws. Thread-safe.
Result<ParsedConfig> ParseImageConfig(std::string_view json);

}  // namespace faas::image
