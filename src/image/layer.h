// Unpacking one layer tar into the root filesystem, with OCI whiteout semantics.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>

#include "common/error.h"
#include "common/fd.h"

namespace faas::image {

struct LayerLimits {
  uint64_t max_files = 0;         // layer entries over all layers, whiteouts included
  uint64_t max_rootfs_bytes = 0;  // sum of regular-file sizes over all layers
  uint64_t max_tar_bytes = 0;     // decompressed tar stream bytes over all layers
  uint64_t max_depth = 256;       // path components of an entry
};

// How much path text LayerTotals::device_paths holds at most.
constexpr size_t kMaxDevicePathBytes = 1 << 20;

// Running totals of one import, carried from layer to layer.
struct LayerTotals {
  uint64_t files = 0;
  uint64_t rootfs_bytes = 0;
  uint64_t tar_bytes = 0;
  uint64_t devices = 0;      // device nodes skipped, hard links to them included
  std::string first_device;  // the first of them, e.g. "/dev/console"
  // Where skipped device nodes were (relative paths), so that a hard link to one is
  // skipped too. Bounded (kMaxDevicePathBytes of paths): a link to a device past the
  // bound is refused as a link to a missing target.
  std::unordered_set<std::string> device_paths;
  size_t device_path_bytes = 0;
};

// Applies the layer held in `blob_fd` (borrowed; a seekable regular file holding a tar,
// plain or gzip/zstd/bzip2/xz compressed) on top of the tree at `rootfs_fd` (borrowed
// directory fd).
//
// Reads the blob twice, so that memory stays bounded whatever the layer's size (only
// the times of up to 65536 directories are kept until the end). The first pass
// checks every entry (path rules, entry types, limits), performs the whiteouts (so they
// only ever remove content of lower layers, wherever they sit in the tar) and hashes
// the decompressed stream to its end; when `expected_diff_id` ("sha256:<hex>") is not
// empty it must match before any entry of the layer is written. The second pass writes
// the entries, then restores the times of the directories it touched.
//
// Block and character devices are never created (a container gets its devices from the
// runtime): each is skipped and counted in `totals`, and what was at its path before
// (from a lower layer or earlier in this one) is removed, as the device replaces it. A
// hard link to a skipped device, in this layer or a later one, is skipped and counted
// the same way. FIFOs are created; sockets are skipped silently.
//
// Every path is resolved beneath `rootfs_fd` with openat2(RESOLVE_BENEATH): symlinks
// are never followed out of the tree and a final symlink is never written through.
// Errors: kBadImage (unsafe or malformed entry, an entry deeper than `limits.max_depth`,
// corrupt compression, digest mismatch; the message names the entry), kTooLarge (a limit in
// `limits` would be exceeded by `totals`), kIo (our own filesystem operations). On error the tree
// may hold part of the layer. Updates `totals`. Thread-safe for distinct trees.
//
// `blob_is_diff_id`: the caller has checked that the blob's own bytes hash to
// `expected_diff_id`, i.e. the blob is the uncompressed tar itself. It is then read
// as a tar directly, is not hashed again, and the first pass seeks over file data
// instead of reading it.
Status ApplyLayer(int blob_fd, int rootfs_fd, const std::string& expected_diff_id,
                  const LayerLimits& limits, LayerTotals* totals, bool blob_is_diff_id = false);

// Opens the directory `relative` ("" for the root itself) beneath `root_fd` (borrowed) as
// an O_PATH fd, the way ApplyLayer reaches directories: openat2(RESOLVE_BENEATH), symlinks
// followed only while they stay beneath. Errors are kBadImage with the errno kept:
// EXDEV or ELOOP when the path leads out of the tree (an absolute symlink, "..", a loop),
// ENOENT or ENOTDIR when a component is missing or not a directory, ENAMETOOLONG; other
// failures are kIo.
Result<UniqueFd> OpenDirBeneath(int root_fd, const std::string& relative);

}  // namespace faas::image
