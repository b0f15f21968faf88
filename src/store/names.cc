#include "store/names.h"

#include <string>

namespace faas::store {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

Status ValidateName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 63 && IsLowerAlnum(name[0]);
  for (size_t i = 1; ok && i < name.size(); ++i) {
    char c = name[i];
    ok = IsLowerAlnum(c) || c == '_' || c == '.' || c == '-';
  }
  if (ok) return Ok();
  std::string shown(name.substr(0, 80));
  for (char& c : shown)
    if (c < 0x20 || c > 0x7e) c = '?';
  return MakeError(
      Errc::kInvalidArgument,
      "invalid function name '" + shown +
          "': use 1-63 characters from a-z 0-9 _ . -, starting with a letter or digit");
}

}  // namespace faas::store
