#include "server/publisher.h"

#include <stdlib.h>

#include <boost/asio/post.hpp>
#include <chrono>

#include "common/file.h"
#include "common/log.h"
#include "pull/pusher.h"
#include "pull/reference.h"
#include "server/clock.h"

namespace faas::server {
namespace {

namespace asio = boost::asio;

// The version's record: the serving one, or a kept one.
Result<store::FunctionRecord> FindVersion(const store::Registry& registry, const std::string& name,
                                          std::optional<uint64_t> version) {
  const store::FunctionRecord* serving = registry.Find(name);
  if (serving == nullptr) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  if (!version || *version == serving->version) return *serving;
  for (const store::FunctionRecord& kept : registry.Kept(name))
    if (kept.version == *version) return kept;
  return MakeError(Errc::kNotFound,
                   "no version " + std::to_string(*version) + " of '" + name + "' is kept");
}

}  // namespace

Publisher::Publisher(asio::io_context& io, asio::thread_pool& workers, const store::StateDir& state,
                     Functions& functions, const pull::RegistryOptions& registry,
                     pull::BlobCache* cache)
    : io_(io),
      workers_(workers),
      state_(state),
      functions_(functions),
      registry_(registry),
      cache_(cache) {}

Status Publisher::Start(const std::string& name, const std::string& image,
                        std::optional<uint64_t> version,
                        std::shared_ptr<const api::DeployCancel> cancel,
                        api::Backend::DeployDone done) {
  FAAS_ASSIGN_OR_RETURN(pull::Reference ref, pull::ParseReference(image));
  if (!ref.digest.empty()) {
    return MakeError(Errc::kInvalidArgument, "push to a tag, not to a digest (" + image +
                                                 "): the registry names what it stores");
  }
  FAAS_ASSIGN_OR_RETURN(store::FunctionRecord record,
                        FindVersion(functions_.registry(), name, version));
  pull::Platform platform = pull::HostPlatform();
  if (!record.platform.empty()) {
    FAAS_ASSIGN_OR_RETURN(platform, pull::ParsePlatform(record.platform));
  }
  FAAS_RETURN_IF_ERROR(functions_.BeginDeploy(name, "push"));
  spdlog::info("pushing {} version {} to {}", name, record.version, ref.String());
  // Another repository of the same registry that the version came from (or was pushed
  // to) may lend the layer.
  std::string mount_from;
  if (auto source = pull::ParseReference(record.image_ref);
      source.ok() && source->domain == ref.domain)
    mount_from = source->repository;
  pull::PushImage push{.rootfs = state_.VersionPath(name, record.version),
                       .id_base = record.userns_base,
                       .cmd = record.cmd,
                       .env = record.image_env,
                       .working_dir = record.working_dir,
                       .user = record.user,
                       .platform = platform};
  pull::KnownLayer known{
      .digest = record.layer_digest, .diff_id = record.layer_diff_id, .size = record.layer_size};
  const auto started = std::chrono::steady_clock::now();
  asio::post(workers_, [this, name, ref, push = std::move(push), mount_from, known, cancel, started,
                        version = record.version, done = std::move(done)]() mutable {
    std::string work = state_.TmpDir() + "/push-XXXXXX";
    Result<pull::PushResult> result = [&]() -> Result<pull::PushResult> {
      if (::mkdtemp(work.data()) == nullptr) {
        int err = errno;
        work.clear();
        return SysError(err, "mkdtemp in " + state_.TmpDir());
      }
      pull::Pusher pusher(ref, registry_,
                          [this, cancel] { return stopping_.load() || cancel->cancelled(); });
      return pusher.Push(push, work, mount_from, cache_, &known);
    }();
    if (!work.empty()) (void)RemoveTree(work);
    asio::post(io_, [this, name, ref, version, started, result = std::move(result),
                     platform = push.platform.String(), done = std::move(done)]() mutable {
      functions_.EndDeploy(name);
      if (!result.ok()) {
        spdlog::warn("push of {} version {} to {} failed after {} ms: {}", name, version,
                     ref.String(), MillisSince(started), result.error().message);
        return done(std::move(result).error());
      }
      if (Status st = functions_.RecordPush(name, version,
                                            {.ref = ref.String(),
                                             .manifest_digest = result->manifest_digest,
                                             .platform = platform,
                                             .layer_digest = result->layer_digest,
                                             .layer_diff_id = result->layer_diff_id,
                                             .layer_size = result->layer_bytes});
          !st.ok())
        spdlog::warn("push of {}: the registry file does not record it: {}", name,
                     st.error().message);
      spdlog::info("pushed {} version {} to {} ({}) in {} ms", name, version, ref.String(),
                   result->manifest_digest, MillisSince(started));
      done(nlohmann::json{
          {"name", name},
          {"version", version},
          {"image", ref.String()},
          {"manifest_digest", result->manifest_digest},
          {"config_digest", result->config_digest},
          {"layer",
           {{"digest", result->layer_digest},
            {"size", result->layer_bytes},
            {"outcome", result->layer_outcome},
            {"written", result->layer_written}}},
          {"blobs",
           {{"uploaded", result->uploaded},
            {"existed", result->existed},
            {"mounted", result->mounted}}},
      });
    });
  });
  return Ok();
}

}  // namespace faas::server
