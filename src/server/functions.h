// The deployed functions: their addresses, listeners, rootfs versions and the
// containers serving their requests. Owned by the event loop thread; every method
// must be called on it. Imports run elsewhere (see Daemon) and only their result
// is committed here.
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
#include "image/importer.h"
#include "image/user.h"
#include "net/addresses.h"
#include "net/ip_pool.h"
#include "net/pool_claim.h"
#include "server/listener.h"
#include "server/reject.h"
#include "server/request.h"
#include "server/scaler.h"
#include "store/limits.h"
#include "store/registry.h"
#include "store/state_dir.h"

namespace faas::server {

struct FunctionsOptions {
  std::string pool = "10.0.0.0/24";
  ListenerOptions listener;  // port, first-byte timeout
  RuntimeOptions runtime;
};

// An import that finished: its rootfs sits in STATE/images/NAME/.new-* waiting to be swapped in.
struct ImportedImage {
  std::string name;
  std::string new_rootfs;
  image::ImageConfig config;
  image::UserIds user;
  store::DeployOptions options;
  uint32_t userns_base = 0;  // the rootfs is owned by base+id; 0: no user namespace
};

class Functions {
 public:
  Functions(boost::asio::io_context& io, const store::StateDir& state, FunctionsOptions options,
            RootfsVersion::Remover remover);
  ~Functions();

  // Start-up: claims the address pool in this network namespace (kConflict when
  // another live faasd has an overlapping one), loads the registry, removes leftovers
  // of a dead faasd (bundles, runtime containers, stale lo:faas addresses of the
  // pool), re-adds addresses and listens.
  Status Start();

  // Marks `name` as being deployed; kConflict if a deploy of it is under way.
  Status BeginDeploy(const std::string& name);
  // Ends a deploy: on success swaps the new rootfs in (keeping the IP of an existing
  // function), or allocates an address, adds it and listens; persists the registry.
  // Any failure rolls back and leaves the previous version serving.
  Result<store::FunctionRecord> CommitDeploy(ImportedImage image);
  // Calls `then` once no container of an older version of `name` waits in its pool
  // any more (a redeploy stops them; their cleanup takes a few ms): at once if none.
  void AfterOldPoolGone(const std::string& name, std::function<void()> then);
  void AbortDeploy(const std::string& name);

  // Stops listening, removes the address, the rootfs and the registry entry.
  Status Remove(const std::string& name);

  const store::Registry& registry() const { return registry_; }
  // The live pool, queue and counters of a deployed function (see Scaler::Stats).
  Result<nlohmann::json> RuntimeStats(const std::string& name) const;
  // Names of the functions whose listener is paused now (accept failed for lack of
  // fds or memory: see Listener).
  std::vector<std::string> PausedListeners() const;

  // Stops accepting and waits for running requests and imports; after `drain` the
  // requests are killed.
  // Removes every address it added, then calls `done`.
  void Shutdown(std::chrono::milliseconds drain, std::function<void()> done);

  size_t active_containers() const { return containers_.size(); }

 private:
  struct Function;

  Status RemoveLeftovers();
  void AnswerClaimQueries();
  Status Restore(const std::string& name, const store::FunctionRecord& record);
  Result<net::Ipv4> AllocateIp();
  Status AddAddress(net::Ipv4 ip);
  void RemoveAddress(net::Ipv4 ip);
  Result<store::FunctionRecord> Redeploy(const std::string& name, store::FunctionRecord record);
  Result<store::FunctionRecord> DeployNew(const std::string& name, store::FunctionRecord record);
  Result<std::unique_ptr<Listener>> Listen(const std::string& name, net::Ipv4 ip);
  void OnClient(const std::string& name, UniqueFd client);
  std::unique_ptr<Scaler> MakeScaler(const std::string& name, const store::ScalingOptions& options);
  std::shared_ptr<Container> MakeContainer(const std::string& name, UniqueFd client);
  void OnContainerDone(Container* container);
  void OnContainerIdle(Container* container);
  bool ServingClients(const std::string& name) const;
  void Tick();
  void MaybeFinishShutdown();
  std::string NextContainerId();

  boost::asio::io_context& io_;
  const store::StateDir& state_;
  FunctionsOptions options_;
  RootfsVersion::Remover remover_;
  store::Registry registry_;
  std::optional<net::IpPool> pool_;
  std::optional<net::Netlink> netlink_;
  int lo_index_ = 0;
  std::set<net::Ipv4> added_;  // addresses this faasd added (and must remove)
  Rejector rejector_;          // outlives the functions' scalers
  WaitingClients waiting_;     // outlives the functions' listeners
  std::map<std::string, std::unique_ptr<Function>> functions_;
  std::set<std::string> deploying_;
  std::map<Container*, std::shared_ptr<Container>> containers_;
  struct Retiring {
    std::set<Container*> containers;
    std::vector<std::function<void()>> waiters;
  };
  std::map<std::string, Retiring> retiring_;            // pooled containers a redeploy stopped
  std::map<std::string, net::Ipv4> removed_addresses_;  // of removed functions still serving
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
