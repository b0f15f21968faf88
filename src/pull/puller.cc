#include "pull/puller.h"

#include <arpa/inet.h>
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
constexpr size_t kMaxTokenAnswerBytes = 1 << 20;

using Clock = std::chrono::steady_clock;

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr addr{};
  return ::inet_pton(AF_INET, host.c_str(), &addr) == 1 && (ntohl(addr.s_addr) >> 24) == 127;
}

// The registry's own words from an error body ({"errors": [{"code", "message"}]}).
std::string RegistrySays(const std::string& body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array() ||
      doc["errors"].empty() || !doc["errors"][0].is_object())
    return "";
  const nlohmann::json& first = doc["errors"][0];
  auto code = first.find("code");
  if (code == first.end() || !code->is_string()) return "";
  return " (" + image::Quote(code->get<std::string>()) + ")";
}

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

// A URL's host[:port], for the plain-HTTP rule of a token realm.
std::string UrlDomain(const std::string& url) {
  size_t start = url.find("://");
  if (start == std::string::npos) return "";
  start += 3;
  return url.substr(start, url.find_first_of("/?#", start) - start);
}

bool PrintableToken(const std::string& token) {
  if (token.empty() || token.size() > 64 * 1024) return false;
  for (char c : token)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

}  // namespace

bool PlainHttpAllowed(const std::string& domain, const std::vector<std::string>& insecure) {
  if (IsLoopback(DomainHost(domain))) return true;
  for (const std::string& entry : insecure)
    if (entry == domain || entry == DomainHost(domain)) return true;
  return false;
}

class Puller::Impl {
 public:
  Impl(Reference ref, Platform platform, const RegistryOptions& options,
       std::function<bool()> cancelled)
      : ref_(std::move(ref)),
        platform_(std::move(platform)),
        options_(options),
        cancelled_(std::move(cancelled)),
        deadline_(Clock::now() + options.pull_timeout),
        plain_http_(PlainHttpAllowed(ref_.domain, options.insecure)),
        base_url_((plain_http_ ? "http://" : "https://") + ref_.ApiHost()) {}

  Result<std::string> Resolve();
  Result<image::ImageConfig> Fetch(const std::string& work_dir, const std::string& rootfs_dir,
                                   const image::ImportLimits& limits, image::ImportStats* stats,
                                   BlobCache* cache);

 private:
  HttpGetRequest Request(std::string url, bool allow_http) const;
  Result<HttpAnswer> Get(const std::string& path, const std::string& accept, const BodySink& sink);
  Status Authenticate(const std::string& www_authenticate);
  Status FetchToken(const Challenge& challenge);
  Error StatusError(const HttpAnswer& answer, const std::string& what) const;
  Result<std::string> GetManifest(const std::string& target, const std::string& expected,
                                  std::string* content_type);
  Result<RegistryManifest> ImageManifest();
  Result<image::ParsedConfig> GetConfig(const Descriptor& config);
  Result<std::string> GetLayer(const Descriptor& layer, const std::string& dir, BlobCache* cache);
  Status Check() const;

  Reference ref_;
  Platform platform_;
  const RegistryOptions& options_;
  std::function<bool()> cancelled_;
  Clock::time_point deadline_;
  bool plain_http_;
  std::string base_url_;
  std::string authorization_;  // "Authorization: ..." once known; never in a message
  bool authenticated_ = false;
  std::string manifest_;  // what Resolve got
  std::string manifest_type_;
  uint64_t downloaded_ = 0;
  uint64_t max_download_ = 0;
  std::vector<BlobCache::Lease> leases_;  // the cached layers this pull applies
};

Status Puller::Impl::Check() const {
  if (cancelled_ && cancelled_()) return MakeError(Errc::kUnavailable, "pull called off");
  if (Clock::now() >= deadline_) {
    return MakeError(Errc::kUnavailable, "pull of " + ref_.String() + " took longer than " +
                                             std::to_string(options_.pull_timeout.count()) + " s");
  }
  return Ok();
}

HttpGetRequest Puller::Impl::Request(std::string url, bool allow_http) const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
  return HttpGetRequest{
      .url = std::move(url),
      .headers = {},
      .allow_http = allow_http,
      .ca_file = options_.ca_file,
      .timeout = std::max(left, std::chrono::milliseconds(1)),
      .connect_timeout = options_.connect_timeout,
      .low_speed_bytes = options_.low_speed_bytes,
      .low_speed_time = options_.low_speed_time,
      .max_redirects = options_.max_redirects,
      .cancelled = cancelled_,
  };
}

// A GET of the registry API; a 401 is answered once by authenticating as its
// challenge says, then the request is sent again.
Result<HttpAnswer> Puller::Impl::Get(const std::string& path, const std::string& accept,
                                     const BodySink& sink) {
  for (int attempt = 0;; ++attempt) {
    FAAS_RETURN_IF_ERROR(Check());
    HttpGetRequest request = Request(base_url_ + path, plain_http_);
    if (!accept.empty()) request.headers.push_back("Accept: " + accept);
    if (!authorization_.empty()) request.headers.push_back(authorization_);
    FAAS_ASSIGN_OR_RETURN(HttpAnswer answer, HttpGet(request, sink));
    if (answer.status != 401) return answer;
    if (attempt > 0 || authenticated_) {
      return MakeError(Errc::kInvalidArgument,
                       "registry " + ref_.domain + " refused the credentials for " +
                           ref_.repository + " (401): check the registry auth file");
    }
    FAAS_RETURN_IF_ERROR(Authenticate(answer.www_authenticate));
  }
}

Status Puller::Impl::Authenticate(const std::string& www_authenticate) {
  authenticated_ = true;
  auto challenge = ParseChallenge(www_authenticate);
  if (!challenge.ok()) {
    return MakeError(Errc::kUnavailable,
                     "registry " + ref_.domain + " answered 401 without a usable challenge");
  }
  std::optional<Credentials> creds = options_.auth.Find(ref_.domain);
  if (challenge->scheme == "bearer") return FetchToken(*challenge);
  if (challenge->scheme != "basic") {
    return MakeError(Errc::kUnavailable, "registry " + ref_.domain + " asks for " +
                                             image::Quote(challenge->scheme) +
                                             " authentication: only basic and bearer are known");
  }
  if (!creds) {
    return MakeError(Errc::kInvalidArgument, "registry " + ref_.domain +
                                                 " needs credentials: none for it in the "
                                                 "registry auth file");
  }
  authorization_ = "Authorization: Basic " + Base64Encode(creds->username + ":" + creds->password);
  return Ok();
}

Status Puller::Impl::FetchToken(const Challenge& challenge) {
  auto realm = challenge.params.find("realm");
  if (realm == challenge.params.end() ||
      !(realm->second.starts_with("https://") || realm->second.starts_with("http://"))) {
    return MakeError(Errc::kUnavailable,
                     "registry " + ref_.domain + " asks for a token without an http(s) realm");
  }
  std::string url = realm->second;
  char sep = url.find('?') == std::string::npos ? '?' : '&';
  if (auto service = challenge.params.find("service"); service != challenge.params.end()) {
    url += sep + std::string("service=") + UrlEncode(service->second);
    sep = '&';
  }
  auto scope = challenge.params.find("scope");
  url += sep + std::string("scope=") +
         UrlEncode(scope != challenge.params.end() ? scope->second
                                                   : "repository:" + ref_.repository + ":pull");
  HttpGetRequest request =
      Request(url, PlainHttpAllowed(UrlDomain(realm->second), options_.insecure));
  std::optional<Credentials> creds = options_.auth.Find(ref_.domain);
  if (creds) {
    request.headers.push_back("Authorization: Basic " +
                              Base64Encode(creds->username + ":" + creds->password));
  }
  MemorySink body{.text = {}, .hash = {}, .max_bytes = kMaxTokenAnswerBytes, .what = "token"};
  auto answer = HttpGet(request, [&body](std::string_view chunk) { return body.Add(chunk); });
  if (!answer.ok()) return std::move(answer).error().Wrap("token for " + ref_.domain);
  if (answer->status == 401 || answer->status == 403) {
    return MakeError(Errc::kInvalidArgument, "the token server of " + ref_.domain + " refused " +
                                                 (creds ? "the credentials" : "anonymous access") +
                                                 " (" + std::to_string(answer->status) +
                                                 "): check the registry auth file");
  }
  if (answer->status != 200) {
    return MakeError(Errc::kUnavailable, "the token server of " + ref_.domain + " answered " +
                                             std::to_string(answer->status));
  }
  nlohmann::json doc = nlohmann::json::parse(body.text, nullptr, /*allow_exceptions=*/false);
  std::string token;
  if (doc.is_object()) {
    for (const char* key : {"token", "access_token"})
      if (doc.contains(key) && doc[key].is_string() && token.empty()) token = doc[key];
  }
  if (!PrintableToken(token)) {
    return MakeError(Errc::kUnavailable,
                     "the token server of " + ref_.domain + " answered without a token");
  }
  authorization_ = "Authorization: Bearer " + token;
  return Ok();
}

Error Puller::Impl::StatusError(const HttpAnswer& answer, const std::string& what) const {
  const std::string says = RegistrySays(answer.error_body);
  if (answer.status == 404) {
    return MakeError(Errc::kNotFound, what + ": not found in registry " + ref_.domain + says);
  }
  return MakeError(Errc::kUnavailable, what + ": registry " + ref_.domain + " answered " +
                                           std::to_string(answer.status) + says);
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
                                               image::ImportStats* stats, BlobCache* cache) {
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
  std::vector<image::LayerBlob> blobs;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    auto path = GetLayer(manifest.layers[i], dir, cache);
    stats->input_bytes = downloaded_;
    if (!path.ok()) return std::move(path).error().Wrap("layer " + std::to_string(i + 1));
    blobs.push_back({*path, manifest.layers[i].digest.substr(7)});
  }
  FAAS_RETURN_IF_ERROR(Check());
  FAAS_RETURN_IF_ERROR(image::ApplyLayerBlobs(blobs, config.diff_ids, rootfs_dir, limits, stats));
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
                                         image::ImportStats* stats, BlobCache* cache) {
  return Guarded("pull", [&] { return impl_->Fetch(work_dir, rootfs_dir, limits, stats, cache); });
}

}  // namespace faas::pull
