// Fuzzes the parsers of an image's JSON documents: docker manifest.json, OCI
// index/manifest chains (every blob reads back as the same input) and the config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "image/config.h"
#include "image/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)faas::image::ParseDockerManifest(text);
  (void)faas::image::ParseImageConfig(text);
  (void)faas::image::ParseOciLayout(
      text, [&text](const faas::image::BlobRef&) -> faas::Result<std::string> { return text; });
  return 0;
}
