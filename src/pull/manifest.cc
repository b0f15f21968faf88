#include "pull/manifest.h"

#include <nlohmann/json.hpp>

#include "image/archive_util.h"

namespace faas::pull {

const char kManifestAccept[] =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

namespace {

constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";

Error Bad(const std::string& why) { return MakeError(Errc::kBadImage, why); }

std::string Shown(std::string_view text) { return image::Quote(text); }

bool IsSchema1(std::string_view type) {
  return type.starts_with("application/vnd.docker.distribution.manifest.v1");
}

bool IsForeignLayer(std::string_view type) {
  return type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
         type.starts_with("application/vnd.oci.image.layer.nondistributable.");
}

bool IsLayer(std::string_view type) {
  return type == "application/vnd.docker.image.rootfs.diff.tar.gzip" ||
         type == "application/vnd.oci.image.layer.v1.tar" ||
         type == "application/vnd.oci.image.layer.v1.tar+gzip" ||
         type == "application/vnd.oci.image.layer.v1.tar+zstd";
}

std::string StringField(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<Descriptor> ParseDescriptor(const nlohmann::json& json, const std::string& what) {
  if (!json.is_object()) return Bad(what + " is not an object");
  Descriptor d;
  d.media_type = StringField(json, "mediaType");
  d.digest = StringField(json, "digest");
  auto hex = image::Sha256HexOfDigest(d.digest);
  if (!hex.ok()) return Bad(what + ": bad digest " + Shown(d.digest) + " (sha256 only)");
  auto size = json.find("size");
  if (size == json.end() || !size->is_number_unsigned()) return Bad(what + ": no size");
  d.size = size->get<uint64_t>();
  if (auto platform = json.find("platform"); platform != json.end() && platform->is_object()) {
    d.platform.os = StringField(*platform, "os");
    d.platform.architecture = StringField(*platform, "architecture");
    d.platform.variant = StringField(*platform, "variant");
  }
  return d;
}

Result<RegistryManifest> ParseIndex(const nlohmann::json& doc) {
  RegistryManifest out;
  out.is_index = true;
  auto list = doc.find("manifests");
  if (list == doc.end() || !list->is_array()) return Bad("index without \"manifests\"");
  for (size_t i = 0; i < list->size(); ++i) {
    FAAS_ASSIGN_OR_RETURN(Descriptor d,
                          ParseDescriptor((*list)[i], "index entry " + std::to_string(i + 1)));
    out.manifests.push_back(std::move(d));
  }
  return out;
}

Result<RegistryManifest> ParseImage(const nlohmann::json& doc) {
  RegistryManifest out;
  auto config = doc.find("config");
  if (config == doc.end()) return Bad("manifest without \"config\"");
  FAAS_ASSIGN_OR_RETURN(out.config, ParseDescriptor(*config, "config"));
  if (out.config.media_type != kDockerConfig && out.config.media_type != kOciConfig)
    return Bad("config of unknown media type " + Shown(out.config.media_type));
  auto layers = doc.find("layers");
  if (layers == doc.end() || !layers->is_array()) return Bad("manifest without \"layers\"");
  for (size_t i = 0; i < layers->size(); ++i) {
    const std::string what = "layer " + std::to_string(i + 1);
    FAAS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor((*layers)[i], what));
    if (IsForeignLayer(d.media_type))
      return Bad(what + " is a foreign layer (" + Shown(d.media_type) + "): not supported");
    if (!IsLayer(d.media_type)) return Bad(what + " of unknown media type " + Shown(d.media_type));
    out.layers.push_back(std::move(d));
  }
  return out;
}

}  // namespace

Result<RegistryManifest> ParseRegistryManifest(std::string_view text,
                                               std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (type.ends_with(' ')) type.remove_suffix(1);
  if (IsSchema1(type)) return Bad("schema 1 manifests are not supported (" + Shown(type) + ")");
  FAAS_ASSIGN_OR_RETURN(nlohmann::json doc, image::ParseJson(text, "manifest"));
  if (!doc.is_object()) return Bad("the manifest is not a JSON object");
  auto version = doc.find("schemaVersion");
  if (version != doc.end() && *version == 1) return Bad("schema 1 manifests are not supported");
  const std::string own_type = StringField(doc, "mediaType");
  // The document's own type, when it has one, must not contradict the answer's.
  if (type.empty() || type == "application/json" || type == "application/octet-stream")
    type = own_type;
  if (!own_type.empty() && own_type != type)
    return Bad("the manifest says it is " + Shown(own_type) + " but came as " + Shown(type));
  if (type.empty()) type = doc.contains("manifests") ? kOciIndex : kOciManifest;
  if (type == kOciIndex || type == kDockerList) return ParseIndex(doc);
  if (type == kOciManifest || type == kDockerManifest) return ParseImage(doc);
  return Bad("manifest of unknown media type " + Shown(type));
}

Result<Descriptor> SelectPlatform(const RegistryManifest& index, const Platform& want) {
  std::string there;
  for (const Descriptor& d : index.manifests) {
    if (d.platform.os == want.os && d.platform.architecture == want.architecture &&
        (want.variant.empty() || d.platform.variant == want.variant))
      return d;
    if (d.platform.os.empty()) continue;  // e.g. an attestation
    there += (there.empty() ? "" : ", ") + d.platform.String();
  }
  if (there.empty()) there = "none";
  return Bad("no image for " + want.String() + " in the index (there are: " + image::Quote(there) +
             "); choose one with --platform");
}

}  // namespace faas::pull
