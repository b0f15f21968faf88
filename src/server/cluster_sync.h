// A cluster node's functions, kept the same as the cluster's specs in etcd
// (docs/CLUSTER.md). On the event loop; everything that waits for etcd or bird runs
// on the workers.
//
// Converging: whenever the watcher's view of the specs changes, each function is
// brought to its spec's serving version: nothing when the serving local version has
// the spec's manifest digest and options; a local rollback when a kept version has
// them; else a deploy by REF@DIGEST with the spec's options (and, for a function new
// here, its address), which pulls, checks that a container starts, and swaps the
// version in as any redeploy does. A function the specs no longer have is removed
// (only once the specs were read: a node cut off from etcd keeps what it serves). The
// node reports each function's state under its lease (status/NAME/NODE) and exports
// the /32 of every function it serves to bird.
//
// The API's deploys, removals and rollbacks on a cluster node change the specs:
//   deploy    the image is imported here as usual; before its version is placed the
//             spec is read, or a new function's name and address are taken in one
//             transaction (a spec without a version, which no node serves yet); once
//             the version serves here, an archive's tree is pushed to the cluster's
//             registry, and the spec's next version is written over the revision read.
//   remove    the spec goes (with its address), then the function here.
//   rollback  the spec's kept version becomes the serving one; then this node
//             converges.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "api/server.h"
#include "cluster/bird.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "cluster/state.h"
#include "cluster/watcher.h"
#include "common/error.h"
#include "common/fd.h"
#include "net/ip_pool.h"
#include "server/deploy.h"
#include "server/functions.h"
#include "server/publisher.h"

namespace faas::server {

struct ClusterSyncOptions {
  cluster::EtcdOptions etcd;
  std::string prefix = "/faasd/";
  std::string pool = "10.0.0.0/24";
  size_t keep_versions = 3;
  // Where archives deployed on this node are pushed, as a reference without tag:
  // "HOST[:PORT]/PATH" (the function's image is PATH/NAME:vN). Empty: archive deploys
  // are refused on a cluster node.
  std::string registry = {};
  cluster::BirdOptions bird = {};         // no routes file: no routes exported
  std::chrono::milliseconds retry{3000};  // after a failed convergence
  // How long a stopping node accepts connections once its routes are withdrawn: the
  // router applies the withdrawal meanwhile.
  std::chrono::milliseconds withdraw_grace{1000};
};

class ClusterSync {
 public:
  ClusterSync(boost::asio::io_context& io, boost::asio::thread_pool& workers, Functions& functions,
              Deployer& deployer, Publisher& publisher, cluster::Node& node,
              cluster::Watcher& watcher, ClusterSyncOptions options);
  ~ClusterSync();

  // Parses the pool, opens bird's lifeline and exports the routes (none yet).
  Status Start();
  // The watcher's view changed.
  void OnChange();

  // The API's operations on a cluster node (see above).
  Result<UniqueFd> Deploy(const std::string& name, const std::string& options_header,
                          std::shared_ptr<const api::DeployCancel> cancel,
                          api::Backend::DeployDone done);
  void Remove(const std::string& name, api::Backend::DeployDone done);
  void Rollback(const std::string& name, std::optional<uint64_t> version,
                api::Backend::DeployDone done);

  // The API's answers with the cluster's view: per function the spec's version and
  // each node's report ("cluster": {"version", "image_ref", "manifest_digest",
  // "nodes": {NODE: {"version", "ready"[, "error"]}}}); functions not served here yet
  // are listed with their address.
  nlohmann::json List(nlohmann::json local) const;
  Result<nlohmann::json> Describe(const std::string& name, Result<nlohmann::json> local) const;
  // A function the cluster has that does not serve here yet.
  Result<nlohmann::json> GetIp(const std::string& name) const;

  // Stops converging, withdraws every route, then calls `then` (on the loop) once the
  // withdrawal had `withdraw_grace` to reach the router.
  void Withdraw(std::function<void()> then);

 private:
  struct UserDeploy;

  void Converge(const std::string& name);
  bool RemoveHere(const std::string& name);
  void ConvergeDone(const std::string& name, uint64_t version, const Status& result);
  void Report(const std::string& name, uint64_t version, bool ready, const std::string& error);
  void RetryLater();
  void ExportRoutes();
  void FinishWithdraw(bool grace);
  void Reserve(const std::shared_ptr<UserDeploy>& op, std::function<void(Result<net::Ipv4>)> then);
  void Deployed(const std::shared_ptr<UserDeploy>& op, Result<nlohmann::json> result);
  void WriteSpec(const std::shared_ptr<UserDeploy>& op, cluster::SpecVersion version,
                 nlohmann::json reply);
  void FinishDeploy(const std::shared_ptr<UserDeploy>& op, Result<nlohmann::json> answer);
  static nlohmann::json ClusterJson(const cluster::Watcher::View& view, const std::string& name,
                                    const cluster::FunctionSpec& spec);

  boost::asio::io_context& io_;
  boost::asio::thread_pool& workers_;
  Functions& functions_;
  Deployer& deployer_;
  Publisher& publisher_;
  cluster::Node& node_;
  cluster::Watcher& watcher_;
  ClusterSyncOptions options_;
  std::optional<net::IpPool> pool_;
  cluster::Etcd etcd_;  // thread-safe: used on the workers
  cluster::ClusterState state_;
  std::optional<cluster::BirdRoutes> bird_;

  cluster::Watcher::View view_;       // as of the last OnChange, and this node's own writes
  std::set<std::string> converging_;  // a convergence is under way
  std::set<std::string> again_;       // the spec changed meanwhile
  std::map<std::string, std::shared_ptr<UserDeploy>> user_deploys_;
  std::map<std::string, std::shared_ptr<api::DeployCancel>> cancels_;
  boost::asio::steady_timer retry_timer_;
  bool retry_armed_ = false;
  bool stopping_ = false;

  // Routes: what bird has, and one export at a time.
  std::optional<std::set<std::string>> exported_;
  bool exporting_ = false;
  bool export_again_ = false;
  std::vector<std::function<void()>> withdrawn_;  // waiting for the empty export
};

}  // namespace faas::server
