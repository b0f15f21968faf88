// Fuzzes layer application: any bytes as a (possibly compressed) layer tar extracted
// into a layer directory and merged into an empty tree, then again read as a plain tar
// (the path taken when the blob's digest is its diff_id). Nothing may ever be written
// outside the scratch directories.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_dirs.h"
#include "image/layer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static faas::fuzz::ScratchDirs dirs;
  faas::UniqueFd blob = faas::fuzz::MemFd(data, size);
  faas::image::LayerLimits limits;
  limits.max_files = 2000;
  limits.max_rootfs_bytes = 16 << 20;
  limits.max_tar_bytes = 64 << 20;
  for (bool plain : {false, true}) {
    const std::string layer = dirs.work() + "/layer";
    ::mkdir(layer.c_str(), 0700);
    faas::UniqueFd layer_fd(::open(layer.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    faas::UniqueFd tree(::open(dirs.tree().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    faas::image::LayerTotals totals;
    if (faas::image::ExtractLayer(blob.get(), layer_fd.get(), "", limits, &totals, plain).ok()) {
      faas::image::MergeState merge;
      (void)faas::image::MergeLayer(layer_fd.get(), tree.get(), limits, &merge);
    }
    dirs.ResetAndCheck();
  }
  return 0;
}
