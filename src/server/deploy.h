// A deploy, from the API's upload to the new version serving, in one place:
//
//   Start   (loop)    the name and options are checked, the deploy is marked in
//                     Functions (one at a time per name), and the import is queued
//                     on a worker; the API streams the upload into the pipe returned.
//   Import  (worker)  the archive is unpacked into STATE/images/NAME/.new-*, checked
//                     and prepared (image::PrepareImage, runtime::PrepareRootfs). A
//                     deploy by reference ("image" in the options) pulls the image
//                     from its registry instead (pull::Puller, blobs in the work dir);
//                     when the reference resolves to the manifest digest the serving
//                     version was pulled from, with the same settings, nothing is
//                     imported and the answer says "unchanged".
//   Commit  (loop)    the tree becomes version directory vN and its record is built
//                     from the image and the deploy's options (with the previous
//                     version's where the deploy gives none: see ParseDeployOptions).
//   Check   (loop)    one container of vN is started as a pooled one would be, and
//                     its handler must connect within the connect timeout; if not,
//                     the deploy fails with why (its exit status or the timeout, the
//                     last lines the runtime and the handler wrote). Skipped with
//                     the option start_check false.
//   Swap    (loop)    Functions swaps vN in; its scaler adopts the check's container
//                     (the first pooled one, or it is stopped without a pool). The
//                     answer waits until no pooled container of the old version (nor
//                     a stopped check container) is left.
//
// Every failure, at any step, takes one path (Abort): what the deploy made is
// removed (on a worker: trees can be large), the deploy ends, and the client gets
// the error; the previous version keeps serving. A deploy whose client went away
// (api::DeployCancel) ends the same way and commits nothing.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>
#include <string>

#include "api/server.h"
#include "common/error.h"
#include "common/fd.h"
#include "image/importer.h"
#include "image/prepare.h"
#include "pull/puller.h"
#include "server/clock.h"
#include "server/functions.h"
#include "server/telemetry.h"
#include "store/limits.h"
#include "store/state_dir.h"

namespace faas::server {

struct DeployerOptions {
  image::ImportLimits limits;
  store::FunctionLimits defaults;         // for deploys that do not set their own
  store::ScalingOptions scaling;          // likewise
  image::IdMapping ids;                   // the containers' user namespace, if any
  pull::RegistryOptions registry;         // deploys by reference
  pull::BlobCache* blob_cache = nullptr;  // their layers; none: downloaded every time
  image::LayerStore* layers = nullptr;    // applied layers; none: extracted every time
};

// Removes the layers no version directory uses any more (on a worker: it deletes
// trees), logging what it could not remove.
void CollectLayers(image::LayerStore& layers, const store::StateDir& state);

// Called on the loop once a deploy's image is in, before its version is placed: a
// cluster node takes the function's name and address in etcd there (ClusterSync).
// `then` (on the loop) gets the function's address, or why the deploy cannot commit.
using Reserve =
    std::function<void(const std::string& name, std::function<void(Result<net::Ipv4>)> then)>;

class Deployer {
 public:
  // `telemetry` gets a record of each deploy that Start accepted or refused; it must
  // outlive the deployer.
  Deployer(boost::asio::io_context& io, boost::asio::thread_pool& workers,
           const store::StateDir& state, Functions& functions, Telemetry& telemetry,
           DeployerOptions options);

  // Begins a deploy of `name` with the options of the X-Function-Options header: the
  // write end of a pipe for the image archive (non-blocking), or why not. `done`
  // runs on the loop with the answer once the deploy has ended. With "image": REF
  // (and optionally "platform": "os/arch[/variant]") in the options the image is
  // pulled from its registry and the body must be empty.
  // With `reserve`, the deploy commits only once it has answered (see Reserve).
  Result<UniqueFd> Start(const std::string& name, const std::string& options_header,
                         std::shared_ptr<const api::DeployCancel> cancel,
                         api::Backend::DeployDone done, Reserve reserve = {});

 private:
  struct Job;
  Result<UniqueFd> Begin(const std::shared_ptr<Job>& job);
  void Import(std::shared_ptr<Job> job, UniqueFd input);
  Status ImportAndPrepare(Job& job, int input);
  Result<image::ImageConfig> Pull(Job& job, int input);
  void Unchanged(std::shared_ptr<Job> job);
  void Commit(std::shared_ptr<Job> job);
  void Reserved(std::shared_ptr<Job> job, Result<net::Ipv4> ip);
  Status PlaceVersion(Job& job);
  store::FunctionRecord RecordFor(const Job& job) const;
  void StartCheck(std::shared_ptr<Job> job);
  void OnCheckReady(const std::shared_ptr<Job>& job);
  void OnCheckDone(const std::shared_ptr<Job>& job);
  void StopCheck(Job& job, Error error);
  void Swap(std::shared_ptr<Job> job);
  static nlohmann::json CarriedOver(const Job& job);
  void Abort(std::shared_ptr<Job> job, Error error);
  void Discard(const Job& job) const;
  void Report(const std::string& name, const Job* job, const Status& result) const;

  boost::asio::io_context& io_;
  boost::asio::thread_pool& workers_;
  const store::StateDir& state_;
  Functions& functions_;
  Telemetry& telemetry_;
  DeployerOptions options_;
};

}  // namespace faas::server
