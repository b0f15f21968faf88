#include "common/text.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>

namespace faas {
namespace {

constexpr uint32_t kInvalid = 0xFFFFFFFF;

struct CodePoint {
  uint32_t value = kInvalid;  // kInvalid: the byte at the position starts no valid sequence
  size_t length = 1;
};

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
CodePoint Decode(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[pos + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  size_t length = 0;
  uint32_t value = 0;
  uint32_t min = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, value = lead & 0x1F, min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, value = lead & 0x0F, min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, value = lead & 0x07, min = 0x10000;
  } else {
    return {};
  }
  if (pos + length > text.size()) return {};
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return {};
    value = (value << 6) | (byte(i) & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return {};
  return {value, length};
}

// Code points above ASCII that make a terminal or a text renderer do something other
// than show a character: C1 controls (0x9B alone starts an escape sequence on some
// terminals), line and paragraph separators, bidirectional embeddings and isolates.
bool IsActiveUnicode(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

std::string Hex(const char* format, uint32_t value) {
  char buf[16];  // room for any uint32_t, as the compiler cannot see the callers' ranges
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

}  // namespace

std::string EscapeControl(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint cp = Decode(text, pos);
    if (cp.value == kInvalid || cp.value < 0x20 || cp.value == 0x7F) {
      out += Hex("\\x%02x", static_cast<unsigned char>(text[pos]));
    } else if (IsActiveUnicode(cp.value)) {
      out += Hex("\\u%04x", cp.value);
    } else {
      out.append(text.substr(pos, cp.length));
    }
    pos += cp.length;
  }
  return out;
}

std::string EscapeJsonControl(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (size_t pos = 0; pos < json.size();) {
    const CodePoint cp = Decode(json, pos);
    if (cp.value == kInvalid) {
      out += "\\ufffd";
    } else if (cp.value == 0x7F || IsActiveUnicode(cp.value)) {
      out += Hex("\\u%04x", cp.value);
    } else {
      out.append(json.substr(pos, cp.length));
    }
    pos += cp.length;
  }
  return out;
}

Status ValidateEnvEntry(std::string_view entry) {
  const auto invalid = [&](const char* why) {
    return MakeError(Errc::kInvalidArgument, "invalid env '" + EscapeControl(entry) + "': " + why);
  };
  const size_t eq = entry.find('=');
  if (eq == std::string_view::npos) return invalid("expected KEY=VALUE");
  if (eq == 0) return invalid("the key is empty");
  if (entry.find('\0') != std::string_view::npos) return invalid("it contains a NUL byte");
  for (const char c : entry.substr(0, eq)) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F)
      return invalid("the key contains a control character");
  }
  return Ok();
}

Result<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] != '%') {
      out += text[i];
    } else {
      unsigned value = 0;
      auto [end, ec] = std::from_chars(text.data() + std::min(i + 1, text.size()),
                                       text.data() + std::min(i + 3, text.size()), value, 16);
      if (ec != std::errc() || end != text.data() + i + 3)
        return MakeError(Errc::kInvalidArgument, "bad percent-encoding in the query");
      out += static_cast<char>(value);
      i += 2;
    }
  }
  return out;
}

}  // namespace faas
