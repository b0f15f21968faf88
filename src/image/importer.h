// Turning an uploaded container image archive into a root filesystem.
//
// Accepted archives (the outer tar may itself be gzip- or zstd-compressed):
//   - `docker save`, legacy and Docker >= 25 (manifest.json, OCI layout alongside),
//   - `podman save` docker-archive (layer.tar members may be symlinks to blobs),
//   - `podman save --format oci-archive` (index.json, possibly nested indexes).
// manifest.json is preferred when present; the first image of the archive is taken.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "image/config.h"  // ImageConfig
#include "image/layer.h"   // IdMapping
#include "image/layer_store.h"

namespace faas::image {

struct ImportLimits {
  uint64_t max_image_bytes = 8ull << 30;    // bytes read from input_fd
  uint64_t max_rootfs_bytes = 16ull << 30;  // sum of unpacked regular-file sizes
  uint64_t max_files = 1000000;             // entries written into the rootfs
  uint64_t max_depth = 256;                 // path components of an entry
  IdMapping ids;  // a user namespace's: owners are mapped into it as layers are written
};

struct ImportStats {
  uint64_t input_bytes = 0;          // read from input_fd
  uint64_t layers = 0;               // layers applied
  uint64_t files = 0;                // layer entries processed, whiteouts included
  uint64_t rootfs_bytes = 0;         // sum of regular-file sizes over all layers
  uint64_t skipped_devices = 0;      // device nodes not created (hard links to them too)
  std::string first_skipped_device;  // the first of them, e.g. "/dev/console"; untrusted
};

// Reads an image archive from `input_fd` (borrowed) as a stream, in one pass: it may be
// a pipe (not seekable, read once). On success the input is read to its end, so that a
// writer at the other end of a pipe never blocks; on failure reading stops early.
//
// Every member of the archive is hashed as it passes; memory use does not grow with the
// image. A member whose first bytes are those of a layer (a tar, gzip or zstd) is
// extracted as it streams into a new layer directory of `store`; the others (the
// config, the manifest) are spooled into `work_dir` (an existing empty directory that
// the caller removes afterwards).
// Blobs are checked against the digests naming them (OCI descriptors, blobs/sha256/
// paths) and each layer's uncompressed tar against the config's rootfs.diff_ids before
// the store takes it (see layer_store.h). Layers the store has by diff_id already are
// used as they are. The layers are merged in order into `rootfs_dir` (an existing empty
// directory, the version's, which then holds a reference on each) with OCI whiteout
// semantics, numeric ownership, modes and mtimes; xattrs are skipped,
// and so are device nodes (never created: a container gets its devices from the runtime;
// a tree made by debootstrap or mmdebstrap has /dev/null and friends), which are
// counted in `stats`. Paths are resolved with openat2(RESOLVE_BENEATH), so a
// hostile archive cannot make us follow a symlink out of `rootfs_dir`.
//
// A member named by a digest (`HEX.tar`, `blobs/sha256/HEX`) that is the diff_id of a
// layer the store has is taken to be that layer and not read again: its bytes are
// skipped, not hashed. Without a `store`, a private one in `work_dir` is used (gone with
// it); the tree then keeps its files alone.
//
// On failure `rootfs_dir` may hold partial content (the caller deletes it), but
// nothing is ever written outside `work_dir`, `rootfs_dir` and the store.
//
// Errors:
//   kBadImage  malformed or unsafe input; the message says what and where, e.g.
//              "layer 2 (sha256:ab12cd34ef56): entry '../etc/passwd': path escapes the root"
//   kTooLarge  a limit in `limits` was reached (the decompressed archive is also held
//              to max_image_bytes, to bound what is spooled)
//   kIo        our own I/O failed (including reading input_fd)
//
// Thread-safe: no global state; concurrent imports need distinct directories.
// Never throws. `stats`, when given, is filled in on success and failure.
Result<ImageConfig> ImportImage(int input_fd, const std::string& work_dir,
                                const std::string& rootfs_dir, const ImportLimits& limits,
                                ImportStats* stats = nullptr, LayerStore* store = nullptr);

// A layer blob already on disk (e.g. downloaded from a registry), checked against
// the digest of its descriptor.
struct LayerBlob {
  std::string path;    // a regular file; empty: `store` has the layer, and `rootfs_dir`
                       // took a reference on it (LayerStore::Use)
  std::string sha256;  // lowercase hex of its bytes
};

// Applies `blobs` in order into `rootfs_dir` (an existing empty directory) as
// ImportImage applies an archive's layers: each one's uncompressed tar checked against
// `diff_ids` (the config's rootfs.diff_ids, as many as `blobs`), with the same limits
// (max_image_bytes is the caller's to enforce while downloading), filling `stats` as
// it goes, through `store` as ImportImage (without one: a private store in `work_dir`).
// Errors as ImportImage's. Thread-safe for distinct trees.
Status ApplyLayerBlobs(const std::vector<LayerBlob>& blobs,
                       const std::vector<std::string>& diff_ids, const std::string& rootfs_dir,
                       const ImportLimits& limits, ImportStats* stats, LayerStore* store,
                       const std::string& work_dir);

// What an import skipped, as one line for a log (control characters of the image's
// path escaped), e.g. "skipped 3 device node(s), the first /dev/console: containers get
// their devices from the runtime"; empty when nothing was skipped.
std::string SkippedSummary(const ImportStats& stats);

}  // namespace faas::image
