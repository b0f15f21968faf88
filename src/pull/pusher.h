// Pushing a deployed version's image to a registry with the OCI distribution API v2:
//
//   GET  /v2/                                  is it a registry, which authentication
//   HEAD /v2/REPO/blobs/DIGEST                 has it the blob already (then skipped)
//   POST /v2/REPO/blobs/uploads/?mount=DIGEST&from=OTHER
//                                              mount it from another repository of the
//                                              registry (201), or else start an upload
//   POST /v2/REPO/blobs/uploads/               start an upload (202 and its Location)
//   PUT  LOCATION?digest=DIGEST                the blob in one request (monolithic)
//   PUT  /v2/REPO/manifests/TAG                the manifest
//
// faasd keeps a version as its unpacked tree, so the image pushed is that tree as one
// gzip layer (image::WriteLayer: reproducible, owners as the image had them; kept in
// the layer cache for the next push of the version), a config
// with the version's command, the image's Env, WorkingDir and User, and an OCI image
// manifest. Pulling the reference back gives the same tree and the same digests.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "pull/blob_cache.h"
#include "pull/reference.h"
#include "pull/session.h"

namespace faas::pull {

struct PushImage {
  std::string rootfs;            // the version's tree
  uint32_t id_base = 0;          // its owners shifted for a user namespace (0: not)
  std::vector<std::string> cmd;  // Entrypoint + Cmd as faasd runs them
  std::vector<std::string> env;  // the image's Env
  std::string working_dir;
  std::string user;
  Platform platform;  // os/architecture of the config
};

// A layer written by an earlier push of the same tree.
struct KnownLayer {
  std::string digest;
  std::string diff_id;
  uint64_t size = 0;
};

struct PushResult {
  std::string manifest_digest;  // "sha256:<hex>" of the manifest pushed
  std::string config_digest;    // the image ID
  std::string layer_digest;
  std::string layer_diff_id;
  uint64_t layer_bytes = 0;    // the compressed layer's size
  std::string layer_outcome;   // "uploaded", "existed" or "mounted"
  bool layer_written = false;  // false: an earlier push's, from the layer cache
  // What each blob (layer, config) took: uploaded, found in the repository already,
  // or mounted from `mount_from`.
  int uploaded = 0;
  int existed = 0;
  int mounted = 0;
};

// One push. Not thread-safe; blocking: run it on a worker, never on the event loop.
class Pusher {
 public:
  // `ref` names a tag (a reference by digest cannot be pushed to: kInvalidArgument from
  // Push). `options` is borrowed and must outlive the pusher. `cancelled` (may be
  // empty) is polled during transfers: true calls the push off (kUnavailable).
  Pusher(Reference ref, const RegistryOptions& options, std::function<bool()> cancelled);
  ~Pusher();

  // Writes the layer into `work_dir` (an existing directory the caller removes) and
  // pushes the image. With a `cache`, the layer is put into it once written, and a
  // `known` layer (an earlier push's) found there is pushed without writing it again. `mount_from`,
  // a repository of the same registry that may hold the layer (one this version was pushed to
  // before), is asked to lend it first; empty: none. Errors: kInvalidArgument (a reference by
  // digest, credentials missing or refused, a repository the credentials may not push to),
  // kNotFound, kUnavailable (unreachable, timeouts, unexpected answers, the registry's digest
  // differing from ours), kIo (reading the tree, writing the layer).
  Result<PushResult> Push(const PushImage& image, const std::string& work_dir,
                          const std::string& mount_from, BlobCache* cache = nullptr,
                          const KnownLayer* known = nullptr);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faas::pull
