#include "archive_builder.h"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace faas::testing {
namespace {

using nlohmann::json;

[[noreturn]] void Die(const std::string& what, archive* a = nullptr) {
  std::fprintf(stderr, "archive_builder: %s: %s\n", what.c_str(),
               a != nullptr && archive_error_string(a) != nullptr ? archive_error_string(a) : "");
  std::abort();
}

void Check(int r, const std::string& what, archive* a) {
  if (r < ARCHIVE_WARN) Die(what, a);
}

la_ssize_t AppendToString(archive*, void* opaque, const void* data, size_t size) {
  static_cast<std::string*>(opaque)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

// Runs `write_entries` against a writer of `format` whose output lands in the result.
template <typename F>
std::string WriteArchive(int (*set_format)(archive*), Compression compression, F&& write_entries) {
  std::string out;
  archive* a = archive_write_new();
  Check(set_format(a), "set format", a);
  if (compression == Compression::kGzip) Check(archive_write_add_filter_gzip(a), "gzip", a);
  if (compression == Compression::kZstd) Check(archive_write_add_filter_zstd(a), "zstd", a);
  // No padding after the end: a zstd stream followed by zeros is not a valid stream.
  Check(archive_write_set_bytes_in_last_block(a, 1), "last block", a);
  Check(archive_write_open(a, &out, nullptr, AppendToString, nullptr), "open", a);
  write_entries(a);
  Check(archive_write_close(a), "close", a);
  archive_write_free(a);
  return out;
}

void WriteData(archive* a, const std::string& data) {
  if (!data.empty() &&
      archive_write_data(a, data.data(), data.size()) != static_cast<la_ssize_t>(data.size())) {
    Die("write data", a);
  }
}

int DefaultMode(TarEntry::Type type) {
  switch (type) {
    case TarEntry::Type::kDir:
      return 0755;
    case TarEntry::Type::kSymlink:
      return 0777;
    default:
      return 0644;
  }
}

unsigned FileType(TarEntry::Type type) {
  switch (type) {
    case TarEntry::Type::kDir:
      return AE_IFDIR;
    case TarEntry::Type::kSymlink:
      return AE_IFLNK;
    case TarEntry::Type::kFifo:
      return AE_IFIFO;
    case TarEntry::Type::kCharDevice:
      return AE_IFCHR;
    case TarEntry::Type::kBlockDevice:
      return AE_IFBLK;
    default:
      return AE_IFREG;
  }
}

void WriteEntry(archive* a, const TarEntry& entry) {
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, entry.path.c_str());
  archive_entry_set_filetype(e, FileType(entry.type));
  archive_entry_set_perm(
      e, static_cast<mode_t>(entry.mode >= 0 ? entry.mode : DefaultMode(entry.type)));
  archive_entry_set_uid(e, entry.uid);
  archive_entry_set_gid(e, entry.gid);
  archive_entry_set_mtime(e, entry.mtime, 0);
  bool has_data = entry.type == TarEntry::Type::kFile;
  if (entry.type == TarEntry::Type::kSymlink) archive_entry_set_symlink(e, entry.link.c_str());
  if (entry.type == TarEntry::Type::kHardlink) archive_entry_set_hardlink(e, entry.link.c_str());
  if (entry.type == TarEntry::Type::kCharDevice || entry.type == TarEntry::Type::kBlockDevice) {
    archive_entry_set_rdev(e, makedev(1, 3));
  }
  archive_entry_set_size(e, has_data ? static_cast<la_int64_t>(entry.data.size()) : 0);
  for (const auto& [offset, length] : entry.sparse) {
    archive_entry_sparse_add_entry(e, offset, length);
  }
  Check(archive_write_header(a, e), "write header " + entry.path, a);
  // For sparse entries the writer takes the whole logical content and drops the holes.
  if (has_data) WriteData(a, entry.data);
  archive_entry_free(e);
}

json ConfigDocument(const std::vector<Layer>& layers, const ImageOptions& options) {
  json diff_ids = json::array();
  for (const Layer& layer : layers) diff_ids.push_back(Digest(layer.tar));
  json config = {{"architecture", "amd64"},
                 {"os", "linux"},
                 {"config", options.run_config},
                 {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}},
                 {"history", json::array()}};
  if (options.edit_config) options.edit_config(config);
  return config;
}

json Descriptor(const std::string& media_type, const std::string& blob) {
  return {{"mediaType", media_type},
          {"digest", Digest(blob)},
          {"size", static_cast<int64_t>(blob.size())}};
}

std::string LayerMediaType(Compression compression) {
  switch (compression) {
    case Compression::kGzip:
      return "application/vnd.oci.image.layer.v1.tar+gzip";
    case Compression::kZstd:
      return "application/vnd.oci.image.layer.v1.tar+zstd";
    default:
      return "application/vnd.oci.image.layer.v1.tar";
  }
}

std::string Finish(TarBuilder& tar, const ImageOptions& options) {
  if (options.extra) options.extra(tar);
  return tar.Build(options.outer);
}

std::string DockerManifestJson(const std::string& config_path,
                               const std::vector<std::string>& layer_paths,
                               const ImageOptions& options) {
  json manifest = json::array(
      {{{"Config", config_path}, {"RepoTags", {"faas-test:latest"}}, {"Layers", layer_paths}}});
  if (options.edit_manifest) options.edit_manifest(manifest);
  return manifest.dump();
}

// Adds blobs/sha256/... for the layers, config and manifest; returns the manifest blob.
std::string AddOciBlobs(TarBuilder& tar, const std::vector<Layer>& layers,
                        const std::string& config, bool edit, const ImageOptions& options) {
  tar.Dir("blobs").Dir("blobs/sha256");
  json layer_descriptors = json::array();
  for (const Layer& layer : layers) {
    std::string blob = layer.Blob();
    tar.File("blobs/sha256/" + Sha256Hex(blob), blob);
    layer_descriptors.push_back(Descriptor(LayerMediaType(layer.compression), blob));
  }
  tar.File("blobs/sha256/" + Sha256Hex(config), config);
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config", Descriptor("application/vnd.oci.image.config.v1+json", config)},
                   {"layers", layer_descriptors}};
  if (edit && options.edit_manifest) options.edit_manifest(manifest);
  std::string manifest_blob = manifest.dump();
  tar.File("blobs/sha256/" + Sha256Hex(manifest_blob), manifest_blob);
  return manifest_blob;
}

void AddOciIndex(TarBuilder& tar, const std::string& manifest_blob, bool nested) {
  json top = Descriptor("application/vnd.oci.image.manifest.v1+json", manifest_blob);
  if (nested) {
    json inner = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.oci.image.index.v1+json"},
                  {"manifests", {top}}};
    std::string inner_blob = inner.dump();
    tar.File("blobs/sha256/" + Sha256Hex(inner_blob), inner_blob);
    top = Descriptor("application/vnd.oci.image.index.v1+json", inner_blob);
  }
  json index = {{"schemaVersion", 2},
                {"mediaType", "application/vnd.oci.image.index.v1+json"},
                {"manifests", {top}}};
  tar.File("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  tar.File("index.json", index.dump());
}

}  // namespace

TarBuilder& TarBuilder::File(std::string path, std::string data, int mode) {
  TarEntry entry;
  entry.path = std::move(path);
  entry.data = std::move(data);
  entry.mode = mode;
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::Dir(std::string path, int mode) {
  TarEntry entry;
  entry.type = TarEntry::Type::kDir;
  entry.path = std::move(path);
  entry.mode = mode;
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::Symlink(std::string path, std::string target) {
  TarEntry entry;
  entry.type = TarEntry::Type::kSymlink;
  entry.path = std::move(path);
  entry.link = std::move(target);
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::Hardlink(std::string path, std::string target) {
  TarEntry entry;
  entry.type = TarEntry::Type::kHardlink;
  entry.path = std::move(path);
  entry.link = std::move(target);
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::Fifo(std::string path) {
  TarEntry entry;
  entry.type = TarEntry::Type::kFifo;
  entry.path = std::move(path);
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::CharDevice(std::string path) {
  TarEntry entry;
  entry.type = TarEntry::Type::kCharDevice;
  entry.path = std::move(path);
  return Add(std::move(entry));
}

TarBuilder& TarBuilder::Whiteout(const std::string& dir, const std::string& name) {
  return File((dir.empty() ? "" : dir + "/") + ".wh." + name, "");
}

TarBuilder& TarBuilder::Opaque(const std::string& dir) {
  return File((dir.empty() ? "" : dir + "/") + ".wh..wh..opq", "");
}

TarBuilder& TarBuilder::Add(TarEntry entry) {
  entries_.push_back(std::move(entry));
  return *this;
}

std::string TarBuilder::Build(Compression compression) const {
  return WriteArchive(archive_write_set_format_pax_restricted, compression, [this](archive* a) {
    for (const TarEntry& entry : entries_) WriteEntry(a, entry);
  });
}

std::string Compress(const std::string& data, Compression compression) {
  if (compression == Compression::kNone) return data;
  return WriteArchive(archive_write_set_format_raw, compression, [&data](archive* a) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, "data");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    Check(archive_write_header(a, e), "raw header", a);
    WriteData(a, data);
    archive_entry_free(e);
  });
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) Die("sha256");
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    hex += buf;
  }
  return hex;
}

std::string Digest(const std::string& data) { return "sha256:" + Sha256Hex(data); }

Layer MakeLayer(const TarBuilder& tar, Compression compression) {
  return Layer{tar.Build(), compression};
}

std::string BuildDockerArchive(const std::vector<Layer>& layers, const ImageOptions& options) {
  TarBuilder tar;
  std::vector<std::string> layer_paths;
  std::string parent;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string id = Sha256Hex(parent + Digest(layers[i].tar));
    tar.Dir(id).File(id + "/VERSION", "1.0");
    tar.File(id + "/json", json{{"id", id}, {"parent", parent}}.dump());
    tar.File(id + "/layer.tar", layers[i].Blob());
    layer_paths.push_back(id + "/layer.tar");
    parent = id;
  }
  std::string config = ConfigDocument(layers, options).dump();
  std::string config_name = Sha256Hex(config) + ".json";
  tar.File(config_name, config);
  tar.File("repositories", json{{"faas-test", {{"latest", parent}}}}.dump());
  tar.File("manifest.json", DockerManifestJson(config_name, layer_paths, options));
  return Finish(tar, options);
}

std::string BuildPodmanArchive(const std::vector<Layer>& layers, const ImageOptions& options) {
  TarBuilder tar;
  std::string config = ConfigDocument(layers, options).dump();
  std::string config_name = Sha256Hex(config) + ".json";
  tar.File(config_name, config);
  std::vector<std::string> layer_paths;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string blob = layers[i].Blob();
    std::string blob_name = Sha256Hex(blob) + ".tar";
    tar.File(blob_name, blob);
    std::string id = Sha256Hex("podman-layer-" + std::to_string(i) + blob_name);
    tar.Dir(id).Symlink(id + "/layer.tar", "../" + blob_name);
    layer_paths.push_back(id + "/layer.tar");
  }
  tar.File("manifest.json", DockerManifestJson(config_name, layer_paths, options));
  return Finish(tar, options);
}

std::string BuildDocker25Archive(const std::vector<Layer>& layers, const ImageOptions& options) {
  TarBuilder tar;
  std::string config = ConfigDocument(layers, options).dump();
  std::string manifest_blob = AddOciBlobs(tar, layers, config, /*edit=*/false, options);
  AddOciIndex(tar, manifest_blob, options.nested_index);
  std::vector<std::string> layer_paths;
  for (const Layer& layer : layers)
    layer_paths.push_back("blobs/sha256/" + Sha256Hex(layer.Blob()));
  tar.File("manifest.json",
           DockerManifestJson("blobs/sha256/" + Sha256Hex(config), layer_paths, options));
  return Finish(tar, options);
}

std::string BuildOciArchive(const std::vector<Layer>& layers, const ImageOptions& options) {
  TarBuilder tar;
  std::string config = ConfigDocument(layers, options).dump();
  std::string manifest_blob = AddOciBlobs(tar, layers, config, /*edit=*/true, options);
  AddOciIndex(tar, manifest_blob, options.nested_index);
  return Finish(tar, options);
}

void WriteFileOrDie(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) Die("write " + path);
}

}  // namespace faas::testing
