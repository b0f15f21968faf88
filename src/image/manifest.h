// Finding the image inside the archive: docker's manifest.json or an OCI layout's index.json.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::image {

enum class ArchiveFormat {
  kDocker,  // manifest.json: docker save (legacy and >= 25), podman docker-archive
  kOci,     // index.json only: podman save --format oci-archive
};

// A member of the image archive that the manifest points at.
struct BlobRef {
  std::string path;    // normalized path inside the archive (see NormalizeArchivePath)
  std::string digest;  // "sha256:<hex>" the content must hash to, "" when nothing names one
  int64_t size = -1;   // byte size the content must have, -1 when unknown
};

struct ImageManifest {
  ArchiveFormat format = ArchiveFormat::kDocker;
  BlobRef config;
  std::vector<BlobRef> layers;  // bottom layer first
};

// Parses docker's manifest.json and returns its first image. A path of the form
// "blobs/sha256/<hex>" (Docker >= 25) also sets the expected digest.
// kBadImage for invalid JSON, wrong types, no images, or a path leaving the archive.
// Never throws. Thread-safe.
Result<ImageManifest> ParseDockerManifest(std::string_view json);

// Returns the content of a JSON blob of the archive, already checked against
// blob.digest / blob.size. Errors are passed through unchanged.
using BlobReader = std::function<Result<std::string>(const BlobRef& blob)>;

// Follows an OCI layout from the text of index.json to the first image manifest,
// through nested indexes (bounded depth), reading each document via `read_blob`.
// Layer and config paths are "blobs/<alg>/<hex>" with their digest and size set.
// kBadImage for malformed documents, unsupported digests or an empty index.
// Never throws. Thread-safe if `read_blob` is.
Result<ImageManifest> ParseOciLayout(std::string_view index_json, const BlobReader& read_blob);

}  // namespace faas::image
