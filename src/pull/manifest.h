// The documents of the OCI distribution API: image manifests (Docker schema 2, OCI) and
// indexes (OCI index, Docker manifest list). Pure functions over untrusted text: no
// I/O, thread-safe, never throw. Errors are kBadImage naming what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "pull/reference.h"

namespace faas::pull {

// The Accept header of a manifest request: every kind ParseRegistryManifest reads.
extern const char kManifestAccept[];

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<64 hex>"
  uint64_t size = 0;
  Platform platform;  // an index's entries only
};

struct RegistryManifest {
  bool is_index = false;
  std::vector<Descriptor> manifests;  // an index's
  Descriptor config;                  // an image manifest's
  std::vector<Descriptor> layers;     // bottom layer first
};

// Parses a manifest or an index. `content_type` is the answer's Content-Type (may be
// empty: the document's own mediaType then decides). Refused: schema 1, unknown media
// types of the document, its config or a layer, foreign (non-distributable) layers,
// digests other than sha256, missing fields.
Result<RegistryManifest> ParseRegistryManifest(std::string_view text,
                                               std::string_view content_type);

// The entry of `index` for `want`: os and architecture equal, and the variant too when
// `want` names one. kBadImage listing the platforms there are when none fits.
Result<Descriptor> SelectPlatform(const RegistryManifest& index, const Platform& want);

}  // namespace faas::pull
