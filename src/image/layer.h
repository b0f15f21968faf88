// Unpacking layer tars: each into a directory of its own (ExtractLayer), and then the
// layers in order into a root filesystem that shares their files (MergeLayer).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>

#include "common/error.h"
#include "common/fd.h"

namespace faas::image {

// Container ids 0..size-1 are host ids base..; base 0: no user namespace.
struct IdMapping {
  uint32_t base = 0;
  uint32_t size = 0;
};

struct LayerLimits {
  IdMapping ids;                  // owners are mapped into this range as they are written
  uint64_t max_files = 0;         // layer entries over all layers, whiteouts included
  uint64_t max_rootfs_bytes = 0;  // sum of regular-file sizes over all layers
  uint64_t max_tar_bytes = 0;     // decompressed tar stream bytes over all layers
  uint64_t max_depth = 256;       // path components of an entry
};

// How much path text MergeState::device_paths holds at most (a link to a device past
// the bound is refused as a link to a missing target).
constexpr size_t kMaxDevicePathBytes = 1 << 20;

// Running totals of one import, carried from layer to layer.
struct LayerTotals {
  uint64_t files = 0;
  uint64_t rootfs_bytes = 0;
  uint64_t tar_bytes = 0;
  uint64_t devices = 0;      // device nodes skipped, hard links to them in their layer too
  std::string first_device;  // the first of them, e.g. "/dev/console"
};

// Extracts the layer held in `blob_fd` (borrowed; a seekable regular file holding a tar,
// plain or gzip/zstd/bzip2/xz compressed) into the empty directory `layer_fd`
// (borrowed) as a layer of its own: what the layer creates goes into `tree/`, what it
// removes from the layers below (whiteouts, opaque directories, device nodes) and hard
// links to files of the layers below go into `meta`, in order, for MergeLayer.
//
// One pass: every entry is checked (path rules, entry types, limits) and written, and
// the decompressed stream is hashed to its end; when `expected_diff_id`
// ("sha256:<hex>") is not empty it must match, else the caller discards the directory.
// Memory stays bounded whatever the layer's size (only the times of up to 65536
// directories and the paths of up to 65536 directories the tar did not list are kept).
//
// Block and character devices are never created (a container gets its devices from the
// runtime): each is skipped and counted in `totals`, and what was at its path before
// (in a layer below or earlier in this one) is removed, as the device replaces it. A hard
// link to a skipped device, in this layer or a later one, is skipped and counted the
// same way. FIFOs are created; sockets are skipped silently. With `limits.ids`, owners
// are mapped into the user namespace's range as they are written (and setuid/setgid
// bits dropped); an owner outside it is kBadImage.
//
// Every path is resolved beneath `tree/` with openat2(RESOLVE_BENEATH): symlinks are
// never followed out of the tree and a final symlink is never written through.
// Errors: kBadImage (unsafe or malformed entry, an entry deeper than `limits.max_depth`,
// corrupt compression, digest mismatch; the message names the entry), kTooLarge (a limit
// in `limits` would be exceeded by `totals`), kIo (our own filesystem operations).
// Updates `totals`; the layer's own share of them is kept in `meta` (ReadLayerCounts).
// Thread-safe for distinct directories.
//
// `blob_is_diff_id`: the caller has checked that the blob's own bytes hash to
// `expected_diff_id`, i.e. the blob is the uncompressed tar itself. It is then read
// as a tar directly, is not hashed again, and file data is copied in the kernel.
Status ExtractLayer(int blob_fd, int layer_fd, const std::string& expected_diff_id,
                    const LayerLimits& limits, LayerTotals* totals, bool blob_is_diff_id = false);

// Gives the next bytes of a blob: their count, 0 at its end, -1 when reading failed
// (the reader keeps why). `*data` points at them until the next call.
using LayerStreamReader = std::function<long(const void** data)>;

// As ExtractLayer, reading the blob from `read` as it streams (e.g. a member of an
// archive being received) rather than from a file. Its diff_id is not known yet: returns
// the digest of the decompressed tar ("sha256:<hex>") for the caller to check, or "" when
// the blob is not compressed (the tar's digest is then the blob's own, which the caller
// hashes as it reads). A failure of `read` is a kBadImage "corrupt layer data".
Result<std::string> ExtractLayerFrom(const LayerStreamReader& read, int layer_fd,
                                     const LayerLimits& limits, LayerTotals* totals);

// What an extracted layer counted (files, rootfs_bytes, tar_bytes, devices and the
// first device; no device_paths), read from its `meta`.
Result<LayerTotals> ReadLayerCounts(int layer_fd);

// Across the layers merged into one tree: where skipped device nodes are, so that a hard
// link from a later layer to one is skipped too (bounded as LayerTotals::device_paths),
// and how many such links were skipped.
struct MergeState {
  std::unordered_set<std::string> device_paths;
  size_t device_path_bytes = 0;
  uint64_t linked_devices = 0;
  std::string first_linked_device;
};

// Puts the layer extracted at `layer_fd` (borrowed) on top of the tree at `rootfs_fd`
// (borrowed directory fd) with OCI semantics: first its whiteouts, opaque directories
// and device nodes remove what the layers below have at those paths, then its hard links
// to files below are made, then every entry of its tree is hard-linked into place
// (directories are made, never linked, and take the layer's owner, mode and times unless
// the tar did not list them). The tree then shares every file's inode with the layer:
// nothing here writes into an existing inode (a path is unlinked and linked anew), so
// no later layer, whiteout or version can change the stored layer. A file whose inode
// has too many links (EMLINK) or a layer on another filesystem (EXDEV) is copied
// instead. Paths from `meta` are resolved as ExtractLayer resolves them; errors as its
// (a hard link whose target is missing is kBadImage). Thread-safe for distinct trees.
Status MergeLayer(int layer_fd, int rootfs_fd, const LayerLimits& limits, MergeState* state);

// Opens the directory `relative` ("" for the root itself) beneath `root_fd` (borrowed) as
// an O_PATH fd, the way ApplyLayer reaches directories: openat2(RESOLVE_BENEATH), symlinks
// followed only while they stay beneath. Errors are kBadImage with the errno kept:
// EXDEV or ELOOP when the path leads out of the tree (an absolute symlink, "..", a loop),
// ENOENT or ENOTDIR when a component is missing or not a directory, ENAMETOOLONG; other
// failures are kIo.
Result<UniqueFd> OpenDirBeneath(int root_fd, const std::string& relative);

}  // namespace faas::image
