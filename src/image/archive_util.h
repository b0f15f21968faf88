// Building blocks shared by the image importer: libarchive readers, SHA-256, path rules.
//
// Everything here is free of global state and safe to use from several threads at once,
// as long as each object is used by one thread at a time.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::image {

// Owns a libarchive read handle; frees (and thereby closes) it on destruction.
struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;

// A tar reader that also accepts gzip, zstd, bzip2 and xz compression around the tar.
// Only in-process decoders are enabled: no external program is ever started.
// With `allow_empty`, zero bytes of input read as an archive with no entries.
// Returns null only when libarchive cannot allocate.
ArchiveReader NewTarReader(bool allow_empty, bool decompress = true);

// A reader that yields the decompressed bytes of its input as a single entry
// (same set of decompressors as NewTarReader; uncompressed input passes through).
// When the input decompresses to nothing, the first archive_read_next_header()
// returns ARCHIVE_EOF instead.
ArchiveReader NewDecompressReader();

// libarchive's last error text for `a`, or a placeholder when it has none.
std::string ArchiveErrorText(archive* a);

// Incremental SHA-256 over OpenSSL EVP. Not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  // Lowercase hex of the digest. Call once; the object is spent afterwards.
  std::string FinalHex();

 private:
  EVP_MD_CTX* ctx_;
};

// True for exactly 64 lowercase hex digits.
bool IsSha256Hex(std::string_view hex);

// Checks that `digest` is "sha256:<64 lowercase hex>" and returns the hex part.
// kBadImage otherwise (other algorithms are not supported).
Result<std::string> Sha256HexOfDigest(std::string_view digest);

// "sha256:0123456789ab" for messages.
std::string ShortDigest(std::string_view digest);

// Quotes an untrusted name for an error message: non-printable bytes are escaped
// and very long names are cut, so a hostile name cannot forge log lines.
std::string Quote(std::string_view name);

// Splits a path taken from an archive entry into its components, relative to the
// root the archive is unpacked into. A leading "./" is stripped, empty and "."
// components are dropped. The root itself ("/", ".", "./") yields no components.
// kBadImage for an empty name, an embedded NUL, an absolute path or any ".." component.
Result<std::vector<std::string>> SplitEntryPath(std::string_view path);

// Normalizes a path naming a member of the outer image archive (not the rootfs):
// "./a//b/../c" -> "a/c". ".." may step back inside the archive but not above its
// top; an absolute or empty path is refused. kBadImage "path escapes the archive".
Result<std::string> NormalizeArchivePath(std::string_view path);

// Joins components with '/'.
std::string JoinPath(const std::vector<std::string>& components, size_t count);
inline std::string JoinPath(const std::vector<std::string>& components) {
  return JoinPath(components, components.size());
}

// Reads the whole file `name` relative to `dirfd` (never following a final symlink).
// kTooLarge when it is bigger than `max_bytes`, kIo on I/O errors.
Result<std::string> ReadFileAt(int dirfd, const std::string& name, size_t max_bytes);

// Parses an untrusted JSON document of at most `max_bytes`. Nesting deeper than a
// small fixed limit is refused, so later recursive walks cannot exhaust the stack.
// `what` names the document in error messages. kBadImage on any failure; never throws.
Result<nlohmann::json> ParseJson(std::string_view text, const std::string& what);

}  // namespace faas::image
