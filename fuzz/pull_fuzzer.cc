// Fuzzes the parsers of what a registry pull reads from untrusted places: image
// references, platforms, WWW-Authenticate challenges, auth files, and manifests and
// indexes (with and without a Content-Type, and a platform chosen from an index).
#include <cstddef>
#include <cstdint>
#include <string>

#include "pull/auth.h"
#include "pull/manifest.h"
#include "pull/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace faas::pull;  // NOLINT(build/namespaces): a fuzzer's one function
  std::string text(reinterpret_cast<const char*>(data), size);
  if (auto ref = ParseReference(text); ref.ok()) {
    // The canonical form reads back as itself.
    auto again = ParseReference(ref->String());
    if (!again.ok() || again->String() != ref->String()) __builtin_trap();
    (void)ref->ApiHost();
    (void)ref->Hostname();
  }
  (void)ParsePlatform(text);
  (void)ParseChallenge(text);
  if (auto file = AuthFile::Parse(text); file.ok()) (void)file->Find("docker.io");
  (void)Base64Decode(text);
  for (const char* type : {"", "application/vnd.oci.image.index.v1+json",
                           "application/vnd.docker.distribution.manifest.v2+json"}) {
    auto manifest = ParseRegistryManifest(text, type);
    if (manifest.ok() && manifest->is_index)
      (void)SelectPlatform(*manifest, {"linux", "amd64", ""});
  }
  return 0;
}
