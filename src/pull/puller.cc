#include "pull/puller.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
#include "image/archive_util.h"
#include "image/config.h"
#include "pull/http.h"
#include "pull/manifest.h"

namespace faas::pull {
namespace {

constexpr size_t kMaxConfigBytes = 16 << 20;

// Hashes and bounds a body kept in memory.
struct MemorySink {
  std::string text;
  image::Sha256 hash;
  size_t max_bytes;
  std::string what;

  Status Add(std::string_view chunk) {
    if (text.size() + chunk.size() > max_bytes) {
      return MakeError(Errc::kTooLarge,
                       what + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    text.append(chunk);
    hash.Update(chunk.data(), chunk.size());
    return Ok();
  }
};

}  // namespace

class Puller::Impl {
 public:
  Impl(Reference ref, Platform platform, const RegistryOptions& options,
       std::function<bool()> cancelled)
      : ref_(std::move(ref)),
        platform_(std::move(platform)),
        options_(options),
        session_(ref_, options, std::move(cancelled), "pull") {}

  Result<std::string> Resolve();
  Result<image::ImageConfig> Fetch(const std::string& work_dir, const std::string& rootfs_dir,
                                   const image::ImportLimits& limits, image::ImportStats* stats,
                                   BlobCache* cache, image::LayerStore* layers);

 private:
  Result<HttpAnswer> Get(const std::string& path, const std::string& accept, const BodySink& sink);
  Error StatusError(const HttpAnswer& answer, const std::string& what) const {
    return session_.StatusError(answer, what);
  }
  Result<std::string> GetManifest(const std::string& target, const std::string& expected,
                                  std::string* content_type);
  Result<RegistryManifest> ImageManifest();
  Result<image::ParsedConfig> GetConfig(const Descriptor& config);
  Result<std::string> GetLayer(const Descriptor& layer, const std::string& dir, BlobCache* cache);

  Reference ref_;
  Platform platform_;
  const RegistryOptions& options_;
  RegistrySession session_;
  std::string manifest_;  // what Resolve got
  std::string manifest_type_;
  uint64_t downloaded_ = 0;
  uint64_t max_download_ = 0;
  std::vector<BlobCache::Lease> leases_;  // the cached layers this pull applies
};

// A GET of the registry API.
Result<HttpAnswer> Puller::Impl::Get(const std::string& path, const std::string& accept,
                                     const BodySink& sink) {
  HttpRequest request;
  if (!accept.empty()) request.headers.push_back("Accept: " + accept);
  return session_.Send(std::move(request), path, sink);
}

// The manifest `target` (a tag or digest), checked against `expected` (a digest; empty
// for a tag: the answer's Docker-Content-Digest then, if any).
Result<std::string> Puller::Impl::GetManifest(const std::string& target,
                                              const std::string& expected,
                                              std::string* content_type) {
  const std::string what = "manifest " + ref_.domain + "/" + ref_.repository +
                           (target.starts_with("sha256:") ? "@" : ":") + target;
  MemorySink body{.text = {}, .hash = {}, .max_bytes = options_.max_manifest_bytes, .what = what};
  FAAS_ASSIGN_OR_RETURN(HttpAnswer answer,
                        Get("/v2/" + ref_.repository + "/manifests/" + target, kManifestAccept,
                            [&body](std::string_view chunk) { return body.Add(chunk); }));
  if (answer.status != 200) return StatusError(answer, what);
  downloaded_ += body.text.size();
  const std::string digest = "sha256:" + body.hash.FinalHex();
  const std::string& want = expected.empty() ? answer.docker_content_digest : expected;
  if (!want.empty() && want != digest) {
    return MakeError(Errc::kBadImage, what + ": digest mismatch: the registry sent " + digest +
                                          ", expected " + image::Quote(want));
  }
  *content_type = answer.content_type;
  manifest_ = std::move(body.text);
  return digest;
}

Result<std::string> Puller::Impl::Resolve() {
  FAAS_ASSIGN_OR_RETURN(HttpAnswer ping, Get("/v2/", "", [](std::string_view) { return Ok(); }));
  if (ping.status != 200) {
    return MakeError(Errc::kUnavailable, ref_.domain + " is not a registry: GET /v2/ answered " +
                                             std::to_string(ping.status));
  }
  return GetManifest(ref_.Target(), ref_.digest, &manifest_type_);
}

// The image manifest of the platform: the resolved one, or its index's entry.
Result<RegistryManifest> Puller::Impl::ImageManifest() {
  FAAS_ASSIGN_OR_RETURN(RegistryManifest top, ParseRegistryManifest(manifest_, manifest_type_));
  if (!top.is_index) return top;
  FAAS_ASSIGN_OR_RETURN(Descriptor entry, SelectPlatform(top, platform_));
  std::string type;
  FAAS_RETURN_IF_ERROR(GetManifest(entry.digest, entry.digest, &type));
  if (manifest_.size() != entry.size) {
    return MakeError(Errc::kBadImage, "manifest " + entry.digest + " has " +
                                          std::to_string(manifest_.size()) +
                                          " bytes, its index says " + std::to_string(entry.size));
  }
  FAAS_ASSIGN_OR_RETURN(RegistryManifest image, ParseRegistryManifest(manifest_, type));
  if (image.is_index) return MakeError(Errc::kBadImage, "an index inside an index");
  return image;
}

Result<image::ParsedConfig> Puller::Impl::GetConfig(const Descriptor& config) {
  const std::string what = "config " + image::ShortDigest(config.digest);
  if (config.size > kMaxConfigBytes) {
    return MakeError(Errc::kTooLarge,
                     what + " is larger than " + std::to_string(kMaxConfigBytes) + " bytes");
  }
  MemorySink body{.text = {}, .hash = {}, .max_bytes = config.size, .what = what};
  FAAS_ASSIGN_OR_RETURN(HttpAnswer answer,
                        Get("/v2/" + ref_.repository + "/blobs/" + config.digest, "",
                            [&body](std::string_view chunk) { return body.Add(chunk); }));
  if (answer.status != 200) return StatusError(answer, what);
  downloaded_ += body.text.size();
  const std::string digest = "sha256:" + body.hash.FinalHex();
  if (body.text.size() != config.size || digest != config.digest) {
    return MakeError(Errc::kBadImage, what + ": the registry sent " +
                                          std::to_string(body.text.size()) + " bytes hashing to " +
                                          digest + ", not its descriptor's");
  }
  auto parsed = image::ParseImageConfig(body.text);
  if (!parsed.ok()) return std::move(parsed).error().Wrap("image config");
  parsed->config.digest = config.digest;
  return parsed;
}

// Downloads a layer into `dir` (named by its digest, so the same layer twice is
// fetched once), or takes it from `cache` (if any) or downloads it into it, checked
// against its descriptor; returns its path.
Result<std::string> Puller::Impl::GetLayer(const Descriptor& layer, const std::string& dir,
                                           BlobCache* cache) {
  const std::string what = "layer " + image::ShortDigest(layer.digest);
  FAAS_ASSIGN_OR_RETURN(std::string hex, image::Sha256HexOfDigest(layer.digest));
  if (cache != nullptr) {
    if (auto cached = cache->Find(hex, layer.size)) {
      leases_.push_back(std::move(*cached));
      return leases_.back().path();
    }
  }
  const std::string path = cache != nullptr ? cache->PartPath(hex) : dir + "/" + hex;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd && errno == EEXIST && cache == nullptr) return path;
  if (!fd) return SysError(errno, "create " + path);
  uint64_t got = 0;
  image::Sha256 hash;
  auto sink = [&](std::string_view chunk) -> Status {
    got += chunk.size();
    if (got > layer.size) {
      return MakeError(Errc::kBadImage, what + ": the registry sent more than its " +
                                            std::to_string(layer.size) + " bytes");
    }
    if (downloaded_ + got > max_download_) {
      return MakeError(Errc::kTooLarge, "image larger than " + std::to_string(max_download_) +
                                            " bytes (--max-image-size)");
    }
    hash.Update(chunk.data(), chunk.size());
    return WriteAll(fd.get(), chunk);
  };
  auto answer = Get("/v2/" + ref_.repository + "/blobs/" + layer.digest, "", sink);
  downloaded_ += got;
  auto received = [&]() -> Status {
    if (!answer.ok()) return std::move(answer).error();
    if (answer->status != 200) return StatusError(*answer, what);
    if (got != layer.size) {
      return MakeError(Errc::kBadImage, what + ": the registry sent " + std::to_string(got) +
                                            " of its " + std::to_string(layer.size) + " bytes");
    }
    if (hash.FinalHex() != hex) return MakeError(Errc::kBadImage, what + ": digest mismatch");
    return Ok();
  };
  Status ok = received();
  if (!ok.ok()) {
    ::unlink(path.c_str());  // never taken for a good copy of the layer
    return std::move(ok).error();
  }
  if (cache == nullptr) return path;
  fd.Reset();
  FAAS_ASSIGN_OR_RETURN(BlobCache::Lease lease, cache->Insert(hex, path, layer.size));
  leases_.push_back(std::move(lease));
  return leases_.back().path();
}

Result<image::ImageConfig> Puller::Impl::Fetch(const std::string& work_dir,
                                               const std::string& rootfs_dir,
                                               const image::ImportLimits& limits,
                                               image::ImportStats* stats, BlobCache* cache,
                                               image::LayerStore* layers) {
  max_download_ = limits.max_image_bytes;
  FAAS_ASSIGN_OR_RETURN(RegistryManifest manifest, ImageManifest());
  FAAS_ASSIGN_OR_RETURN(image::ParsedConfig config, GetConfig(manifest.config));
  if (config.diff_ids.size() != manifest.layers.size()) {
    return MakeError(Errc::kBadImage, "image config lists " +
                                          std::to_string(config.diff_ids.size()) +
                                          " rootfs.diff_ids for " +
                                          std::to_string(manifest.layers.size()) + " layers");
  }
  uint64_t total = 0;
  for (const Descriptor& layer : manifest.layers) total += std::min(layer.size, max_download_);
  if (total > max_download_) {
    return MakeError(Errc::kTooLarge, "image larger than " + std::to_string(max_download_) +
                                          " bytes (--max-image-size)");
  }
  const std::string dir = work_dir + "/blobs/sha256";
  FAAS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  FAAS_ASSIGN_OR_RETURN(ino_t holder, image::LayerStore::HolderOf(rootfs_dir));
  std::vector<image::LayerBlob> blobs;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    if (layers != nullptr) {
      // Referenced now, so that the layer stays until the tree has it.
      auto key = image::LayerStore::Key(config.diff_ids[i], limits.ids);
      if (!key.ok()) return std::move(key).error().Wrap("layer " + std::to_string(i + 1));
      FAAS_ASSIGN_OR_RETURN(bool stored, layers->Use(*key, holder));
      if (stored) {
        blobs.push_back({"", manifest.layers[i].digest.substr(7)});
        continue;
      }
    }
    auto path = GetLayer(manifest.layers[i], dir, cache);
    stats->input_bytes = downloaded_;
    if (!path.ok()) return std::move(path).error().Wrap("layer " + std::to_string(i + 1));
    blobs.push_back({*path, manifest.layers[i].digest.substr(7)});
  }
  FAAS_RETURN_IF_ERROR(session_.Check());
  FAAS_RETURN_IF_ERROR(
      image::ApplyLayerBlobs(blobs, config.diff_ids, rootfs_dir, limits, stats, layers, work_dir));
  leases_.clear();
  return std::move(config.config);
}

Puller::Puller(Reference ref, Platform platform, const RegistryOptions& options,
               std::function<bool()> cancelled)
    : impl_(std::make_unique<Impl>(std::move(ref), std::move(platform), options,
                                   std::move(cancelled))) {}

Puller::~Puller() = default;

// The module edge: nothing may escape to the daemon's worker thread.
template <typename F>
auto Guarded(const char* what, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return MakeError(Errc::kInternal, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return MakeError(Errc::kInternal, std::string(what) + ": " + e.what());
  }
}

Result<std::string> Puller::Resolve() {
  return Guarded("resolve", [this] { return impl_->Resolve(); });
}

Result<image::ImageConfig> Puller::Fetch(const std::string& work_dir, const std::string& rootfs_dir,
                                         const image::ImportLimits& limits,
                                         image::ImportStats* stats, BlobCache* cache,
                                         image::LayerStore* layers) {
  return Guarded("pull",
                 [&] { return impl_->Fetch(work_dir, rootfs_dir, limits, stats, cache, layers); });
}

}  // namespace faas::pull
