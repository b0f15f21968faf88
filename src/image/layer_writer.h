// Writing a directory tree back as one image layer: what `faas push` uploads of a
// deployed version.
//
// The layer is a POSIX tar (pax where ustar is not enough) compressed with gzip (level 1;
// stretches that do not compress are stored as they are)
// (media type application/vnd.oci.image.layer.v1.tar+gzip). It is reproducible: the
// entries come in byte order of their paths, each with its mode, numeric owner and
// modification time in whole seconds, no user or group names, no access or change
// times, and the gzip header carries no time or name; the same tree always gives the
// same digest, so pushing it twice uploads it once.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace faas::image {

struct WrittenLayer {
  std::string digest;   // "sha256:<hex>" of the compressed blob
  std::string diff_id;  // "sha256:<hex>" of the tar inside it
  uint64_t size = 0;    // of the compressed blob
  uint64_t entries = 0;
};

// Writes the tree under `root_dir` (the directory itself is not an entry) to `out_fd`
// (borrowed, written from its current offset). Owners are written as the image had
// them: `id_base` is subtracted from every uid and gid (a tree shifted for a user
// namespace; 0: none). Symlinks are written as symlinks, never followed; a file with
// several links is written once and then as hard links to it; regular files,
// directories, symlinks and FIFOs are written, sockets and device nodes skipped.
// Extended attributes are not written (the importer skips them too).
//
// Errors: kIo for reading the tree or writing `out_fd`, kInternal for the libraries'.
// Thread-safe: no global state. Never throws.
Result<WrittenLayer> WriteLayer(const std::string& root_dir, uint32_t id_base, int out_fd);

}  // namespace faas::image
