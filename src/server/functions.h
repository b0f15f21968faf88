// The deployed functions: per function its record (in the registry), address,
// listener, current rootfs version and scaler (which owns its containers). Owned
// by the event loop thread; every method must be called on it. Deploys run
// elsewhere (see Deployer) and only their result is committed here.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/error.h"
#include "net/addresses.h"
#include "net/ip_pool.h"
#include "net/pool_claim.h"
#include "runtime/runtime.h"
#include "server/clock.h"
#include "server/container.h"
#include "server/listener.h"
#include "server/reject.h"
#include "server/scaler.h"
#include "server/telemetry.h"
#include "store/registry.h"
#include "store/state_dir.h"

namespace faas::server {

struct FunctionsOptions {
  std::string pool = "10.0.0.0/24";
  ListenerOptions listener;  // port, first-byte timeout
  size_t keep_versions = 3;  // versions kept per function, the serving one included (>= 1)
};

class Functions {
 public:
  // `runtime` starts the containers; `remover` deletes a retired rootfs off the loop.
  // `telemetry` gets the functions' request records and handler output while the
  // function is deployed or being deployed (a removed function's last requests are
  // not reported after OnRemoved); it must outlive this object.
  Functions(boost::asio::io_context& io, const store::StateDir& state, runtime::Runtime& runtime,
            FunctionsOptions options, RootfsVersion::Remover remover, Telemetry& telemetry);
  ~Functions();

  // Start-up: claims the address pool in this network namespace (kConflict when
  // another live faasd has an overlapping one), loads the registry, removes leftovers
  // of a dead faasd (bundles, runtime containers, stale lo:faas addresses of the
  // pool), re-adds addresses and listens.
  Status Start();

  // Whether a new function may have `ip`: kInvalidArgument outside the pool,
  // kConflict when a function or another address on the interface has it.
  Status CheckFreeAddress(net::Ipv4 ip);

  // Marks `name` as being deployed (or pushed: `what` is "push", for the messages);
  // kConflict if a deploy or push of it is under way. Rollbacks and removals of `name`
  // are refused meanwhile.
  Status BeginDeploy(const std::string& name, const std::string& what = "deploy");
  // Ends what BeginDeploy began, whatever the outcome.
  void EndDeploy(const std::string& name);
  // Records what a push made of `version` of `name`: the layer it wrote (kept in the
  // layer cache) and, for a version deployed from an archive, the registry image `ref`
  // (canonical) at `manifest_digest` for `platform` (a version that records an image
  // already keeps it). kNotFound when the version is gone; the registry file's write
  // errors.
  struct Pushed {
    std::string ref;
    std::string manifest_digest;
    std::string platform;
    std::string layer_digest;
    std::string layer_diff_id;
    uint64_t layer_size = 0;
  };
  Status RecordPush(const std::string& name, uint64_t version, const Pushed& pushed);
  // A container (not started) of `record`, a version of `name` not committed yet
  // (its version directory in place), without a client, reporting to `events`: a
  // deploy starts it to check that the version starts. nullptr when shutting down.
  std::shared_ptr<Container> MakeCandidate(const std::string& name,
                                           const store::FunctionRecord& record,
                                           Instance::Events events);
  // Makes `record` (its version directory in place) the serving version of `name`:
  // swaps the rootfs in (keeping the IP of an existing function), or allocates an
  // address, adds it and listens; persists the registry. `first`, when given, is a
  // ready MakeCandidate container of `record`: its scaler adopts it (Scaler::Adopt).
  // Any failure rolls back and leaves the previous version serving; the version
  // directory (and `first`) are the caller's then. The replaced version is kept (see
  // Rollback); the versions beyond the last `keep_versions` are removed, each after
  // its last request.
  Result<store::FunctionRecord> Commit(const std::string& name, store::FunctionRecord record,
                                       std::shared_ptr<Container> first = nullptr);
  // Makes a kept version of `name` serve again with its own record, through the same
  // swap as a redeploy: same IP, running requests finish on their version, and the
  // version that served is kept. `version` none: the one that served before the
  // serving one. kNotFound for an unknown function or version, kConflict while a
  // deploy of `name` is under way or when `version` serves already.
  Result<store::FunctionRecord> Rollback(const std::string& name, std::optional<uint64_t> version);
  // Calls `then` once no container of an older version of `name` waits in its pool
  // any more (a redeploy stops them; their cleanup takes a few ms): at once if none.
  void AfterOldPoolGone(const std::string& name, std::function<void()> then);

  // Stops listening, removes the address, the rootfs and the registry entry; tells
  // the telemetry (OnRemoved).
  Status Remove(const std::string& name);

  const store::Registry& registry() const { return registry_; }
  // The live pool, queue and counters of a deployed function (see Scaler::Stats).
  Result<nlohmann::json> RuntimeStats(const std::string& name) const;
  // Names of the functions whose listener is paused now (accept failed for lack of
  // fds or memory: see Listener).
  std::vector<std::string> PausedListeners() const;
  // The containers faasd owns now (pooled, serving, finishing; of removed functions too).
  size_t ContainersAlive() const;

  // Stops accepting and waits for running requests and deploys; after `drain` the
  // requests are killed. Removes every address it added, then calls `done`.
  void Shutdown(std::chrono::milliseconds drain, std::function<void()> done);

 private:
  struct Function;
  // Passes the reports of functions that are deployed (or being deployed) on.
  class Gate final : public Telemetry {
   public:
    Gate(const Functions& functions, Telemetry& sink) : functions_(functions), sink_(sink) {}
    void OnRequest(const RequestRecord& record) override;
    void OnOutput(const OutputLine& line) override;
    void OnContainerStarted(std::string_view function, bool pooled) override;

   private:
    bool Open(std::string_view function) const;
    const Functions& functions_;
    Telemetry& sink_;
  };

  Status RemoveLeftovers();
  void AnswerClaimQueries();
  Status Restore(const std::string& name, const store::FunctionRecord& record);
  bool RestoreKept(const std::string& name, Function& fn);
  std::unique_ptr<Function> MakeFunction(const std::string& name, net::Ipv4 ip,
                                         const store::FunctionRecord& record,
                                         std::unique_ptr<Listener> listener,
                                         std::shared_ptr<RootfsVersion> rootfs);
  // The rootfs of `record`'s version: `first`'s (one object per version, which
  // removes the retired directory after its last container), else a new one.
  std::shared_ptr<RootfsVersion> VersionOf(const std::string& name,
                                           const store::FunctionRecord& record,
                                           const std::shared_ptr<Container>& first);
  Result<std::set<net::Ipv4>> TakenAddresses();
  Result<net::Ipv4> AllocateIp();
  Status AddAddress(net::Ipv4 ip);
  void RemoveAddress(net::Ipv4 ip);
  Result<store::FunctionRecord> Swap(const std::string& name, store::FunctionRecord record,
                                     std::shared_ptr<Container> first);
  std::shared_ptr<RootfsVersion> TakeRootfs(const std::string& name, Function& fn,
                                            uint64_t version);
  Result<store::FunctionRecord> DeployNew(const std::string& name, store::FunctionRecord record,
                                          std::shared_ptr<Container> first);
  Result<std::unique_ptr<Listener>> Listen(const std::string& name, net::Ipv4 ip);
  std::shared_ptr<Instance> MakeContainer(const std::string& name, Client client,
                                          Instance::Events events);
  ContainerConfig ConfigFor(const std::string& name, const store::FunctionRecord& record,
                            std::shared_ptr<RootfsVersion> rootfs);
  void OnContainerGone();
  void Sweep();
  void Tick();
  void MaybeFinishShutdown();
  std::string NextContainerId();

  boost::asio::io_context& io_;
  const store::StateDir& state_;
  runtime::Runtime& runtime_;
  FunctionsOptions options_;
  RootfsVersion::Remover remover_;
  Telemetry& telemetry_;
  Gate gate_;
  LoopClock clock_;
  store::Registry registry_;
  std::optional<net::IpPool> pool_;
  std::optional<net::Netlink> netlink_;
  int lo_index_ = 0;
  std::set<net::Ipv4> added_;  // addresses this faasd added (and must remove)
  Rejector rejector_;          // outlives the functions' scalers
  WaitingClients waiting_;     // outlives the functions' listeners
  std::map<std::string, std::unique_ptr<Function>> functions_;
  // Removed functions whose containers still serve their last requests.
  std::vector<std::unique_ptr<Function>> removed_;
  bool sweep_posted_ = false;
  std::map<std::string, std::string> deploying_;  // name -> "deploy" or "push"

  uint64_t next_id_ = 0;
  std::string id_prefix_;
  bool shutting_down_ = false;
  std::function<void()> shutdown_done_;
  std::unique_ptr<boost::asio::steady_timer> drain_timer_;
  boost::asio::steady_timer tick_timer_;
  std::optional<net::PoolClaim> claim_;  // this namespace's addresses of the pool are ours
  boost::asio::posix::stream_descriptor claim_watch_;
};

}  // namespace faas::server
