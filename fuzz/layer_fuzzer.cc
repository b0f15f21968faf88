// Fuzzes layer application: any bytes as a (possibly compressed) layer tar applied
// to an empty tree, then again read as a plain tar (the path taken when the blob's
// digest is its diff_id). Nothing may ever be written outside the tree.
#include <fcntl.h>

#include <cstddef>
#include <cstdint>

#include "fuzz_dirs.h"
#include "image/layer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static faas::fuzz::ScratchDirs dirs;
  faas::UniqueFd blob = faas::fuzz::MemFd(data, size);
  faas::UniqueFd tree(::open(dirs.tree().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  faas::image::LayerLimits limits;
  limits.max_files = 2000;
  limits.max_rootfs_bytes = 16 << 20;
  limits.max_tar_bytes = 64 << 20;
  for (bool plain : {false, true}) {
    faas::image::LayerTotals totals;
    (void)faas::image::ApplyLayer(blob.get(), tree.get(), "", limits, &totals, plain);
    dirs.ResetAndCheck();
  }
  return 0;
}
