#include "image/archive_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/fd.h"
#include "common/io.h"

namespace faas::image {
namespace {

void AddDecompressors(archive* a) {
  // Explicit list instead of support_filter_all: the latter may fall back to
  // running external programs (lrzip, lzop, ...) chosen by the input's magic bytes.
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_zstd(a);
  archive_read_support_filter_bzip2(a);
  archive_read_support_filter_xz(a);
}

constexpr size_t kMaxQuotedName = 200;
constexpr int kMaxJsonDepth = 32;

}  // namespace

ArchiveReader NewTarReader(bool allow_empty, bool decompress) {
  ArchiveReader reader(archive_read_new());
  if (!reader) return reader;
  if (decompress) AddDecompressors(reader.get());
  archive_read_support_format_tar(reader.get());
  if (allow_empty) archive_read_support_format_empty(reader.get());
  return reader;
}

ArchiveReader NewDecompressReader() {
  ArchiveReader reader(archive_read_new());
  if (!reader) return reader;
  AddDecompressors(reader.get());
  archive_read_support_format_raw(reader.get());
  archive_read_support_format_empty(reader.get());  // raw refuses zero bytes
  return reader;
}

std::string ArchiveErrorText(archive* a) {
  const char* text = archive_error_string(a);
  return text != nullptr ? text : "unknown archive error";
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Allocation failure leaves ctx_ null; FinalHex then reports an empty digest,
  // which never matches an expected one.
  if (ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    ctx_ = nullptr;
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t size) {
  if (ctx_ != nullptr && size > 0) EVP_DigestUpdate(ctx_, data, size);
}

std::string Sha256::FinalHex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (ctx_ == nullptr || EVP_DigestFinal_ex(ctx_, md, &len) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

bool IsSha256Hex(std::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Result<std::string> Sha256HexOfDigest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.substr(0, kPrefix.size()) != kPrefix) {
    return MakeError(Errc::kBadImage, "unsupported digest " + Quote(digest));
  }
  std::string_view hex = digest.substr(kPrefix.size());
  if (!IsSha256Hex(hex)) return MakeError(Errc::kBadImage, "malformed digest " + Quote(digest));
  return std::string(hex);
}

std::string ShortDigest(std::string_view digest) {
  size_t colon = digest.find(':');
  size_t keep = colon == std::string_view::npos ? 12 : colon + 1 + 12;
  std::string quoted = Quote(digest.substr(0, keep));
  return quoted.substr(1, quoted.size() - 2);  // without the quotes
}

std::string Quote(std::string_view name) {
  std::string out = "'";
  for (size_t i = 0; i < name.size() && i < kMaxQuotedName; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (name.size() > kMaxQuotedName) out += "...";
  out += "'";
  return out;
}

Result<std::vector<std::string>> SplitEntryPath(std::string_view path) {
  if (path.empty()) return MakeError(Errc::kBadImage, "empty name");
  if (path.find('\0') != std::string_view::npos) {
    return MakeError(Errc::kBadImage, "name contains a NUL byte");
  }
  while (path.substr(0, 2) == "./") path.remove_prefix(2);
  std::vector<std::string> components;
  if (path == "/" || path == "." || path.empty()) return components;  // the root itself
  if (path.front() == '/') return MakeError(Errc::kBadImage, "absolute path not allowed");
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part == "..") return MakeError(Errc::kBadImage, "path escapes the root");
    if (!part.empty() && part != ".") components.emplace_back(part);
    start = slash + 1;
  }
  return components;
}

Result<std::string> NormalizeArchivePath(std::string_view path) {
  if (path.empty()) return MakeError(Errc::kBadImage, "empty path");
  if (path.find('\0') != std::string_view::npos) {
    return MakeError(Errc::kBadImage, "path contains a NUL byte");
  }
  if (path.front() == '/') return MakeError(Errc::kBadImage, "path escapes the archive");
  std::vector<std::string> components;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part == "..") {
      if (components.empty()) return MakeError(Errc::kBadImage, "path escapes the archive");
      components.pop_back();
    } else if (!part.empty() && part != ".") {
      components.emplace_back(part);
    }
    start = slash + 1;
  }
  if (components.empty()) return MakeError(Errc::kBadImage, "path names the archive root");
  return JoinPath(components);
}

std::string JoinPath(const std::vector<std::string>& components, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < components.size(); ++i) {
    if (i > 0) out.push_back('/');
    out += components[i];
  }
  return out;
}

Result<std::string> ReadFileAt(int dirfd, const std::string& name, size_t max_bytes) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError(errno, "open " + name);
  auto text = ReadAll(fd.get(), max_bytes);
  if (!text.ok()) return std::move(text).error().Wrap(name);
  return text;
}

Result<nlohmann::json> ParseJson(std::string_view text, const std::string& what) {
  bool too_deep = false;
  auto limit_depth = [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth <= kMaxJsonDepth) return true;
    too_deep = true;
    return false;  // drop the subtree: keeps the kept tree shallow
  };
  try {
    nlohmann::json doc = nlohmann::json::parse(text, limit_depth);
    if (too_deep) return MakeError(Errc::kBadImage, what + ": JSON nested too deeply");
    return doc;
  } catch (const nlohmann::json::exception& e) {
    return MakeError(Errc::kBadImage, what + ": invalid JSON: " + Quote(e.what()));
  }
}

}  // namespace faas::image
