// Fuzzes loading registry.json and parsing a deploy's X-Function-Options header.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/file.h"
#include "store/limits.h"
#include "store/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/faas-fuzz-registry-" + std::to_string(::getpid()) + ".json";
  std::string text(reinterpret_cast<const char*>(data), size);
  if (!faas::AtomicWriteFile(path, text).ok()) return 0;
  faas::store::Registry registry(path);
  if (registry.Load().ok()) (void)registry.ToJson().dump();
  (void)faas::store::ParseDeployOptions(text, faas::store::FunctionLimits{});
  // A redeploy over a record's options: the header carried over onto itself.
  nlohmann::json previous = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (previous.is_object())
    (void)faas::store::ParseDeployOptions("{}", faas::store::FunctionLimits{}, {}, previous);
  return 0;
}
