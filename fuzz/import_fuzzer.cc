// Fuzzes a whole image import (outer archive, manifest, config, layers) from any
// bytes. Nothing may ever be written outside the work and rootfs directories.
#include <cstddef>
#include <cstdint>

#include "fuzz_dirs.h"
#include "image/importer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static faas::fuzz::ScratchDirs dirs;
  faas::UniqueFd input = faas::fuzz::MemFd(data, size);
  faas::image::ImportLimits limits;
  limits.max_image_bytes = 32 << 20;
  limits.max_rootfs_bytes = 16 << 20;
  limits.max_files = 2000;
  (void)faas::image::ImportImage(input.get(), dirs.work(), dirs.tree(), limits);
  dirs.ResetAndCheck();
  return 0;
}
