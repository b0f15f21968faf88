// A push of a deployed version to a registry (`faas push`, POST
// /api/functions/NAME/push):
//
//   Start   (loop)    the reference and the version are checked and the function is
//                     marked busy in Functions (no deploy, rollback or removal of it
//                     meanwhile: its version directory stays), then the push is queued.
//   Push    (worker)  pull::Pusher writes the version's tree as a layer into
//                     STATE/tmp/push-*, and uploads it with a config and a manifest.
//   Record  (loop)    a version deployed from an archive now records the reference
//                     and digest pushed (a later `faas new --image` of it is
//                     "unchanged"); the function is free again; the client gets the
//                     digests and what each blob took.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <optional>
#include <string>

#include "api/server.h"
#include "pull/blob_cache.h"
#include "pull/session.h"
#include "server/functions.h"
#include "store/state_dir.h"

namespace faas::server {

class Publisher {
 public:
  // `registry` (credentials, TLS, timeouts) and `cache` (the pushed layers go into it;
  // may be null) are borrowed and must outlive the publisher.
  Publisher(boost::asio::io_context& io, boost::asio::thread_pool& workers,
            const store::StateDir& state, Functions& functions,
            const pull::RegistryOptions& registry, pull::BlobCache* cache);

  // See api::Backend::StartPush. Errors: kInvalidArgument (a bad reference, one by
  // digest), kNotFound (no such function or version), kConflict (a deploy or push of
  // it under way), kUnavailable (shutting down).
  Status Start(const std::string& name, const std::string& image, std::optional<uint64_t> version,
               std::shared_ptr<const api::DeployCancel> cancel, api::Backend::DeployDone done);

  // Calls off the pushes under way (faasd is stopping): they end with an error.
  void Stop() { stopping_.store(true); }

 private:
  boost::asio::io_context& io_;
  boost::asio::thread_pool& workers_;
  const store::StateDir& state_;
  Functions& functions_;
  const pull::RegistryOptions& registry_;
  pull::BlobCache* cache_;
  std::atomic<bool> stopping_{false};
};

}  // namespace faas::server
