// Test helper: builds tar archives and complete container image archives in memory,
// with libarchive's writer and real SHA-256 digests. Not for production use: failures
// abort the test binary (they are bugs in the test, not conditions to handle).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace faas::testing {

enum class Compression { kNone, kGzip, kZstd };

struct TarEntry {
  enum class Type { kFile, kDir, kSymlink, kHardlink, kFifo, kCharDevice, kBlockDevice };
  Type type = Type::kFile;
  std::string path;  // written verbatim: may be absolute or contain ".." on purpose
  std::string data;  // file content
  std::string link;  // symlink text or hardlink target
  int mode = -1;     // -1: 0644 for files, 0755 for directories, 0777 for symlinks
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t mtime = 1700000000;
  // Sparse file: data regions as {offset, length} pairs; `data` is the whole logical
  // content (holes are zeros) and its size the file size.
  std::vector<std::pair<int64_t, int64_t>> sparse;
};

// Accumulates entries; Build() writes them, in order, as a pax tar.
class TarBuilder {
 public:
  TarBuilder& File(std::string path, std::string data, int mode = 0644);
  TarBuilder& Dir(std::string path, int mode = 0755);
  TarBuilder& Symlink(std::string path, std::string target);
  TarBuilder& Hardlink(std::string path, std::string target);
  TarBuilder& Fifo(std::string path);
  TarBuilder& CharDevice(std::string path);
  // "<dir>/.wh.<name>"; dir "" means the top.
  TarBuilder& Whiteout(const std::string& dir, const std::string& name);
  // "<dir>/.wh..wh..opq".
  TarBuilder& Opaque(const std::string& dir);
  TarBuilder& Add(TarEntry entry);
  // The entry added last, to adjust owner, mode or times.
  TarEntry& last() { return entries_.back(); }

  std::string Build(Compression compression = Compression::kNone) const;

 private:
  std::vector<TarEntry> entries_;
};

// Compresses `data` as a single stream (gzip or zstd); kNone returns it unchanged.
std::string Compress(const std::string& data, Compression compression);
std::string Sha256Hex(const std::string& data);
std::string Digest(const std::string& data);  // "sha256:<hex>"

// One layer of an image: its uncompressed tar and how the blob is compressed.
struct Layer {
  std::string tar;
  Compression compression = Compression::kNone;
  std::string Blob() const { return Compress(tar, compression); }
};
Layer MakeLayer(const TarBuilder& tar, Compression compression = Compression::kNone);

struct ImageOptions {
  nlohmann::json run_config = nlohmann::json::object();  // the config's "config" object
  Compression outer = Compression::kNone;                // compression of the whole archive
  bool nested_index = false;                             // OCI: index -> index -> manifest
  // Hooks, applied before digests are computed (except `extra`):
  std::function<void(nlohmann::json&)> edit_config;    // the whole image config
  std::function<void(nlohmann::json&)> edit_manifest;  // manifest.json / the OCI manifest
  // Appends members at the end of the archive (a later member replaces an earlier one).
  std::function<void(TarBuilder&)> extra;
};

// `docker save` before Docker 25: <id>/layer.tar, <config-hex>.json, manifest.json last.
std::string BuildDockerArchive(const std::vector<Layer>& layers, const ImageOptions& options = {});
// `podman save` docker-archive: <hex>.tar blobs, <id>/layer.tar symlinks to "../<hex>.tar",
// manifest.json pointing at the symlinks.
std::string BuildPodmanArchive(const std::vector<Layer>& layers, const ImageOptions& options = {});
// `docker save` from Docker 25 on: an OCI layout plus manifest.json naming blobs/sha256/.
std::string BuildDocker25Archive(const std::vector<Layer>& layers,
                                 const ImageOptions& options = {});
// `podman save --format oci-archive`: oci-layout, index.json, blobs/sha256/ only.
std::string BuildOciArchive(const std::vector<Layer>& layers, const ImageOptions& options = {});

// Writes `data` to `path` (a test file). Aborts on failure.
void WriteFileOrDie(const std::string& path, const std::string& data);

}  // namespace faas::testing
