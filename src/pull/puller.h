// Pulling an image from a registry with the OCI distribution API v2, into a root
// filesystem:
//
//   GET /v2/                          is it a registry, which authentication
//   GET /v2/REPO/manifests/TAG|DIGEST a manifest or an index (then the platform's
//                                     manifest by digest)
//   GET /v2/REPO/blobs/DIGEST         the config, then each layer
//
// Every document and blob is checked against its digest while it streams: the
// manifest against the digest asked for (or Docker-Content-Digest when pulling by
// tag), the config and layers against their descriptors (size and digest). Layers are
// written to WORK/blobs/sha256/HEX, or taken from and put into a BlobCache (never held
// in memory), and applied in order with image::ApplyLayerBlobs, whose diff_ids come
// from the config.
//
// Authentication, TLS and the plain-HTTP rule are the RegistrySession's (pull/session.h):
// anonymous, HTTP basic or the bearer token flow; HTTPS with the system's CA store
// (and RegistryOptions::ca_file); plain HTTP only for loopback registries
// (127.0.0.0/8, ::1, localhost) and those named in RegistryOptions::insecure.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "image/importer.h"
#include "pull/auth.h"
#include "pull/blob_cache.h"
#include "pull/reference.h"
#include "pull/session.h"

namespace faas::pull {

// One pull. Not thread-safe; blocking: run it on a worker, never on the event loop.
class Puller {
 public:
  // `options` is borrowed and must outlive the puller. `cancelled` (may be empty) is
  // polled during transfers: true calls the pull off (kUnavailable).
  Puller(Reference ref, Platform platform, const RegistryOptions& options,
         std::function<bool()> cancelled);
  ~Puller();

  // Asks the registry for the reference's manifest and returns its digest
  // ("sha256:<hex>": what the reference resolves to, an index's own when it is one).
  // Errors: kNotFound (unknown repository or tag), kBadImage (digest mismatch, a
  // document faasd does not read), kTooLarge (a manifest over max_manifest_bytes),
  // kInvalidArgument (credentials missing or refused), kUnavailable (unreachable,
  // timeouts, redirects, answers of an unexpected status).
  Result<std::string> Resolve();

  // After Resolve: fetches the image of the platform and applies its layers into
  // `rootfs_dir` (an existing empty directory), using `work_dir` (an existing
  // directory the caller removes) for the blobs. `limits` as for ImportImage
  // (max_image_bytes bounds the bytes downloaded); `stats` is filled in as it goes.
  // The config's digest is the returned ImageConfig's `digest`. Errors as Resolve's,
  // and those of image::ApplyLayerBlobs. With a `cache`, layers it has are not
  // downloaded and those downloaded go into it (not into `work_dir`). With `layers`,
  // layers it has by diff_id are neither downloaded nor extracted again (see
  // image::ImportImage).
  Result<image::ImageConfig> Fetch(const std::string& work_dir, const std::string& rootfs_dir,
                                   const image::ImportLimits& limits, image::ImportStats* stats,
                                   BlobCache* cache = nullptr, image::LayerStore* layers = nullptr);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faas::pull
