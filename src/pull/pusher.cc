#include "pull/pusher.h"

#include <fcntl.h>
#include <unistd.h>

#include <exception>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fd.h"
#include "image/archive_util.h"
#include "image/layer_writer.h"

namespace faas::pull {
namespace {

constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";
constexpr char kOciLayerGzip[] = "application/vnd.oci.image.layer.v1.tar+gzip";

std::string Sha256Of(const std::string& text) {
  image::Sha256 hash;
  hash.Update(text.data(), text.size());
  return "sha256:" + hash.FinalHex();
}

// The image config: what to run, and the one layer's diff_id. No creation time, so the
// same version always has the same config digest.
std::string ConfigJson(const PushImage& image, const std::string& diff_id) {
  nlohmann::json config = nlohmann::json::object();
  if (!image.cmd.empty()) config["Cmd"] = image.cmd;
  if (!image.env.empty()) config["Env"] = image.env;
  if (!image.working_dir.empty()) config["WorkingDir"] = image.working_dir;
  if (!image.user.empty()) config["User"] = image.user;
  nlohmann::json doc = {{"architecture", image.platform.architecture},
                        {"os", image.platform.os},
                        {"config", std::move(config)},
                        {"rootfs", {{"type", "layers"}, {"diff_ids", {diff_id}}}}};
  if (!image.platform.variant.empty()) doc["variant"] = image.platform.variant;
  return doc.dump();
}

std::string ManifestJson(const std::string& config_digest, size_t config_size,
                         const image::WrittenLayer& layer) {
  nlohmann::json doc = {
      {"schemaVersion", 2},
      {"mediaType", kOciManifest},
      {"config", {{"mediaType", kOciConfig}, {"digest", config_digest}, {"size", config_size}}},
      {"layers", {{{"mediaType", kOciLayerGzip}, {"digest", layer.digest}, {"size", layer.size}}}},
  };
  return doc.dump();
}

// A blob to push: from a file or from memory.
struct Blob {
  std::string digest;
  uint64_t size = 0;
  int fd = -1;
  std::string text;
};

}  // namespace

class Pusher::Impl {
 public:
  Impl(Reference ref, const RegistryOptions& options, std::function<bool()> cancelled)
      : ref_(std::move(ref)), session_(ref_, options, std::move(cancelled), "push") {}

  Result<PushResult> Push(const PushImage& image, const std::string& work_dir,
                          const std::string& mount_from, BlobCache* cache, const KnownLayer* known);

 private:
  Result<image::WrittenLayer> Layer(const PushImage& image, const std::string& work_dir,
                                    BlobCache* cache, const KnownLayer* known);
  enum class Outcome { kUploaded, kExisted, kMounted };
  Result<Outcome> PushBlob(const Blob& blob, const std::string& what,
                           const std::string& mount_from);
  Status Upload(const Blob& blob, const std::string& what, const std::string& location);

  static Status Drop(std::string_view) { return Ok(); }

  Reference ref_;
  RegistrySession session_;
  UniqueFd layer_fd_;
  std::optional<BlobCache::Lease> lease_;  // the layer, while it is pushed
  bool reused_ = false;                    // the layer is an earlier push's
};

// The version's layer: an earlier push's from the cache, or written now (and cached).
Result<image::WrittenLayer> Pusher::Impl::Layer(const PushImage& image, const std::string& work_dir,
                                                BlobCache* cache, const KnownLayer* known) {
  if (cache != nullptr && known != nullptr && !known->digest.empty()) {
    auto hex = image::Sha256HexOfDigest(known->digest);
    if (hex.ok()) {
      if (auto cached = cache->Find(*hex, known->size)) {
        layer_fd_.Reset(::open(cached->path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (layer_fd_) {
          lease_.emplace(std::move(*cached));
          reused_ = true;
          return image::WrittenLayer{.digest = known->digest,
                                     .diff_id = known->diff_id,
                                     .size = known->size,
                                     .entries = 0};
        }
      }
    }
  }
  const std::string path = work_dir + "/layer.tar.gz";
  layer_fd_.Reset(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!layer_fd_) return SysError(errno, "create " + path);
  auto layer = image::WriteLayer(image.rootfs, image.id_base, layer_fd_.get());
  if (!layer.ok()) return std::move(layer).error().Wrap("layer of " + image.rootfs);
  if (cache != nullptr) {
    // The open fd stays valid across the rename into the cache.
    auto lease = cache->Insert(layer->digest.substr(7), path, layer->size);
    if (lease.ok()) lease_.emplace(std::move(*lease));
  }
  return layer;
}

Result<Pusher::Impl::Outcome> Pusher::Impl::PushBlob(const Blob& blob, const std::string& what,
                                                     const std::string& mount_from) {
  const std::string blobs = "/v2/" + ref_.repository + "/blobs/";
  FAAS_ASSIGN_OR_RETURN(HttpAnswer head,
                        session_.Send(HttpRequest{.method = "HEAD"}, blobs + blob.digest, Drop));
  if (head.status == 200) return Outcome::kExisted;
  if (head.status != 404) return session_.StatusError(head, what);

  std::string start = blobs + "uploads/";
  if (!mount_from.empty() && mount_from != ref_.repository)
    start += "?mount=" + UrlEncode(blob.digest) + "&from=" + UrlEncode(mount_from);
  FAAS_ASSIGN_OR_RETURN(HttpAnswer began,
                        session_.Send(HttpRequest{.method = "POST"}, start, Drop));
  if (began.status == 201 && start.find("?mount=") != std::string::npos) return Outcome::kMounted;
  if (began.status != 202) return session_.StatusError(began, what + ": starting its upload");
  if (began.location.empty()) {
    return MakeError(Errc::kUnavailable,
                     what + ": registry " + ref_.domain + " started an upload without a Location");
  }
  FAAS_RETURN_IF_ERROR(Upload(blob, what, session_.Resolve(began.location)));
  return Outcome::kUploaded;
}

// The whole blob in one PUT to the upload's location, with its digest.
Status Pusher::Impl::Upload(const Blob& blob, const std::string& what,
                            const std::string& location) {
  const char sep = location.find('?') == std::string::npos ? '?' : '&';
  HttpRequest put{.method = "PUT",
                  .url = location + sep + "digest=" + UrlEncode(blob.digest),
                  .headers = {"Content-Type: application/octet-stream"},
                  .body = blob.text,
                  .body_fd = blob.fd,
                  .body_size = blob.size};
  FAAS_ASSIGN_OR_RETURN(HttpAnswer answer, session_.Send(std::move(put), "", Drop));
  if (answer.status != 201) return session_.StatusError(answer, what + ": its upload");
  if (!answer.docker_content_digest.empty() && answer.docker_content_digest != blob.digest) {
    return MakeError(Errc::kUnavailable, what + ": registry " + ref_.domain + " stored it as " +
                                             image::Quote(answer.docker_content_digest));
  }
  return Ok();
}

Result<PushResult> Pusher::Impl::Push(const PushImage& image, const std::string& work_dir,
                                      const std::string& mount_from, BlobCache* cache,
                                      const KnownLayer* known) {
  if (!ref_.digest.empty() || ref_.tag.empty()) {
    return MakeError(Errc::kInvalidArgument,
                     "push to a tag (" + ref_.domain + "/" + ref_.repository +
                         ":TAG), not to a digest: the registry names what it stores");
  }
  FAAS_ASSIGN_OR_RETURN(image::WrittenLayer layer_written, Layer(image, work_dir, cache, known));
  const image::WrittenLayer* layer = &layer_written;
  FAAS_RETURN_IF_ERROR(session_.Check());

  FAAS_ASSIGN_OR_RETURN(HttpAnswer ping, session_.Send(HttpRequest{}, "/v2/", Drop));
  if (ping.status != 200) {
    return MakeError(Errc::kUnavailable, ref_.domain + " is not a registry: GET /v2/ answered " +
                                             std::to_string(ping.status));
  }

  PushResult result;
  auto count = [&result](Outcome outcome) {
    if (outcome == Outcome::kUploaded) ++result.uploaded;
    if (outcome == Outcome::kExisted) ++result.existed;
    if (outcome == Outcome::kMounted) ++result.mounted;
  };
  Blob layer_blob{.digest = layer->digest, .size = layer->size, .fd = layer_fd_.get(), .text = {}};
  FAAS_ASSIGN_OR_RETURN(
      Outcome layer_outcome,
      PushBlob(layer_blob, "layer " + image::ShortDigest(layer->digest), mount_from));
  count(layer_outcome);
  result.layer_outcome = layer_outcome == Outcome::kUploaded  ? "uploaded"
                         : layer_outcome == Outcome::kMounted ? "mounted"
                                                              : "existed";

  const std::string config = ConfigJson(image, layer->diff_id);
  Blob config_blob{.digest = Sha256Of(config), .size = config.size(), .fd = -1, .text = config};
  FAAS_ASSIGN_OR_RETURN(
      Outcome config_outcome,
      PushBlob(config_blob, "config " + image::ShortDigest(config_blob.digest), mount_from));
  count(config_outcome);

  const std::string manifest = ManifestJson(config_blob.digest, config.size(), *layer);
  const std::string manifest_digest = Sha256Of(manifest);
  HttpRequest put{.method = "PUT",
                  .url = {},
                  .headers = {std::string("Content-Type: ") + kOciManifest},
                  .body = manifest};
  const std::string what = "manifest " + ref_.String();
  FAAS_ASSIGN_OR_RETURN(
      HttpAnswer answer,
      session_.Send(std::move(put), "/v2/" + ref_.repository + "/manifests/" + ref_.tag, Drop));
  if (answer.status != 201) return session_.StatusError(answer, what);
  if (!answer.docker_content_digest.empty() && answer.docker_content_digest != manifest_digest) {
    return MakeError(Errc::kUnavailable, what + ": registry " + ref_.domain + " stored it as " +
                                             image::Quote(answer.docker_content_digest) + ", not " +
                                             manifest_digest);
  }
  result.manifest_digest = manifest_digest;
  result.config_digest = config_blob.digest;
  result.layer_digest = layer->digest;
  result.layer_diff_id = layer->diff_id;
  result.layer_written = !reused_;
  result.layer_bytes = layer->size;
  return result;
}

Pusher::Pusher(Reference ref, const RegistryOptions& options, std::function<bool()> cancelled)
    : impl_(std::make_unique<Impl>(std::move(ref), options, std::move(cancelled))) {}

Pusher::~Pusher() = default;

Result<PushResult> Pusher::Push(const PushImage& image, const std::string& work_dir,
                                const std::string& mount_from, BlobCache* cache,
                                const KnownLayer* known) {
  try {
    return impl_->Push(image, work_dir, mount_from, cache, known);
  } catch (const std::bad_alloc&) {
    return MakeError(Errc::kInternal, "push: out of memory");
  } catch (const std::exception& e) {
    return MakeError(Errc::kInternal, std::string("push: ") + e.what());
  }
}

}  // namespace faas::pull
