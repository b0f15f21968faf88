#include "image/manifest.h"

#include "image/archive_util.h"

namespace faas::image {
namespace {

using nlohmann::json;

constexpr int kMaxIndexDepth = 4;
constexpr std::string_view kBlobsSha256 = "blobs/sha256/";

Error Bad(const std::string& what, const std::string& problem) {
  return MakeError(Errc::kBadImage, what + ": " + problem);
}

Result<BlobRef> DockerPathRef(const json& value, const std::string& what) {
  if (!value.is_string()) return Bad(what, "expected a string");
  const std::string& raw = value.get_ref<const std::string&>();
  BlobRef ref;
  auto path = NormalizeArchivePath(raw);
  if (!path.ok()) return std::move(path).error().Wrap(what + " " + Quote(raw));
  ref.path = std::move(path).value();
  // Docker >= 25 names blobs by digest; trust the name only as a claim to verify.
  std::string_view view = ref.path;
  if (view.substr(0, kBlobsSha256.size()) == kBlobsSha256 &&
      IsSha256Hex(view.substr(kBlobsSha256.size()))) {
    ref.digest = "sha256:" + std::string(view.substr(kBlobsSha256.size()));
  }
  return ref;
}

Result<ImageManifest> DockerManifestFromJson(const json& doc) {
  const std::string what = "manifest.json";
  if (!doc.is_array()) return Bad(what, "expected an array");
  if (doc.empty()) return Bad(what, "no images");
  const json& image = doc.front();
  if (!image.is_object()) return Bad(what, "image entry is not an object");
  auto config = image.find("Config");
  if (config == image.end()) return Bad(what, "image has no Config");
  ImageManifest manifest;
  manifest.format = ArchiveFormat::kDocker;
  FAAS_ASSIGN_OR_RETURN(manifest.config, DockerPathRef(*config, what + ": Config"));
  auto layers = image.find("Layers");
  if (layers == image.end() || !layers->is_array()) return Bad(what, "Layers: expected an array");
  for (const json& layer : *layers) {
    FAAS_ASSIGN_OR_RETURN(BlobRef ref, DockerPathRef(layer, what + ": layer path"));
    manifest.layers.push_back(std::move(ref));
  }
  return manifest;
}

Result<BlobRef> OciDescriptorRef(const json& desc, const std::string& what) {
  if (!desc.is_object()) return Bad(what, "descriptor is not an object");
  auto digest = desc.find("digest");
  if (digest == desc.end() || !digest->is_string()) return Bad(what, "descriptor has no digest");
  BlobRef ref;
  ref.digest = digest->get<std::string>();
  auto hex = Sha256HexOfDigest(ref.digest);
  if (!hex.ok()) return std::move(hex).error().Wrap(what);
  ref.path = std::string(kBlobsSha256) + hex.value();
  auto size = desc.find("size");
  if (size != desc.end()) {
    if (!size->is_number_integer() || size->get<int64_t>() < 0) {
      return Bad(what, "descriptor size is not a non-negative integer");
    }
    ref.size = size->get<int64_t>();
  }
  return ref;
}

std::string MediaType(const json& doc) {
  auto it = doc.find("mediaType");
  return it != doc.end() && it->is_string() ? it->get<std::string>() : "";
}

bool IsIndex(const json& doc) {
  std::string type = MediaType(doc);
  if (type == "application/vnd.oci.image.index.v1+json" ||
      type == "application/vnd.docker.distribution.manifest.list.v2+json") {
    return true;
  }
  // mediaType is optional in OCI documents: fall back on the shape.
  return type.empty() && doc.contains("manifests") && !doc.contains("layers");
}

Result<ImageManifest> OciManifestFromJson(const json& doc) {
  const std::string what = "OCI manifest";
  ImageManifest manifest;
  manifest.format = ArchiveFormat::kOci;
  auto config = doc.find("config");
  if (config == doc.end()) return Bad(what, "no config");
  FAAS_ASSIGN_OR_RETURN(manifest.config, OciDescriptorRef(*config, what + ": config"));
  auto layers = doc.find("layers");
  if (layers == doc.end() || !layers->is_array()) return Bad(what, "layers: expected an array");
  for (const json& layer : *layers) {
    FAAS_ASSIGN_OR_RETURN(BlobRef ref, OciDescriptorRef(layer, what + ": layer"));
    manifest.layers.push_back(std::move(ref));
  }
  return manifest;
}

Result<BlobRef> FirstManifestOfIndex(const json& index, const std::string& what) {
  auto manifests = index.find("manifests");
  if (manifests == index.end() || !manifests->is_array()) {
    return Bad(what, "manifests: expected an array");
  }
  if (manifests->empty()) return Bad(what, "no manifests");
  return OciDescriptorRef(manifests->front(), what);
}

Result<ImageManifest> WalkOci(const json& index, const BlobReader& read_blob) {
  const json* doc = &index;
  json current;
  std::string what = "index.json";
  for (int depth = 0; depth <= kMaxIndexDepth; ++depth) {
    if (!doc->is_object()) return Bad(what, "expected an object");
    if (depth > 0 && !IsIndex(*doc)) return OciManifestFromJson(*doc);
    FAAS_ASSIGN_OR_RETURN(BlobRef ref, FirstManifestOfIndex(*doc, what));
    what = "manifest " + ShortDigest(ref.digest);
    FAAS_ASSIGN_OR_RETURN(std::string text, read_blob(ref));
    FAAS_ASSIGN_OR_RETURN(current, ParseJson(text, what));
    doc = &current;
  }
  return Bad(what, "image indexes nested too deeply");
}

}  // namespace

Result<ImageManifest> ParseDockerManifest(std::string_view text) {
  FAAS_ASSIGN_OR_RETURN(json doc, ParseJson(text, "manifest.json"));
  try {
    return DockerManifestFromJson(doc);
  } catch (const json::exception& e) {
    return Bad("manifest.json", e.what());
  }
}

Result<ImageManifest> ParseOciLayout(std::string_view index_json, const BlobReader& read_blob) {
  FAAS_ASSIGN_OR_RETURN(json index, ParseJson(index_json, "index.json"));
  try {
    return WalkOci(index, read_blob);
  } catch (const json::exception& e) {
    return Bad("OCI layout", e.what());
  }
}

}  // namespace faas::image
