#include "store/state_dir.h"

#include <sys/stat.h>

#include <filesystem>

#include "common/file.h"

namespace faas::store {

Status StateDir::Create() const {
  FAAS_RETURN_IF_ERROR(MakeDirs(root_));
  ::chmod(root_.c_str(), 0700);
  for (const auto& dir : {ImagesDir(), BundlesDir(), TmpDir()}) FAAS_RETURN_IF_ERROR(MakeDirs(dir));
  return Ok();
}

Status StateDir::RemoveStale() const {
  std::error_code ec;
  for (const auto& dir : {BundlesDir(), TmpDir()}) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
      FAAS_RETURN_IF_ERROR(RemoveTree(entry.path().string()));
  }
  for (const auto& fn : std::filesystem::directory_iterator(ImagesDir(), ec)) {
    std::error_code inner;
    for (const auto& entry : std::filesystem::directory_iterator(fn.path(), inner)) {
      std::string base = entry.path().filename().string();
      if (base.rfind(".new-", 0) == 0 || base.rfind(".old-", 0) == 0)
        FAAS_RETURN_IF_ERROR(RemoveTree(entry.path().string()));
    }
  }
  return Ok();
}

}  // namespace faas::store
