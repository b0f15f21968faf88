// The cluster's state in etcd, under a prefix (default "/faasd/"):
//
//   functions/NAME        the function's spec (JSON): IP, version, image reference and
//                         manifest digest, platform, deploy options
//   ips/IP                NAME: the address is the function's
//   nodes/NODE            a node's liveness (JSON: advertise address, version), under
//                         the node's lease: gone when the node stops renewing it
//   status/NAME/NODE      which version of NAME the node serves, and whether it is
//                         ready, under the node's lease
//
// A new function's name and address are taken in one transaction that requires both
// keys to be absent, so two nodes deploying at once can never create one name twice
// or hand out one address twice; a new version of a spec is written only over the
// revision it was read at. Without a quorum etcd accepts no write: a partitioned node
// allocates nothing.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/etcd.h"
#include "common/error.h"
#include "net/ip_pool.h"

namespace faas::cluster {

// One version of a function as the cluster knows it.
struct SpecVersion {
  uint64_t version = 0;
  std::string image_ref = {};        // canonical reference as deployed
  std::string manifest_digest = {};  // what every node pulls: ref@digest
  std::string platform = {};
  nlohmann::json options = nlohmann::json::object();  // the deploy options in force
  std::string deployed_at = {};
  std::string deployed_by = {};  // the node that wrote it
};

// A function's spec: the version that must serve, and the earlier ones a rollback
// can return to. A spec without a manifest digest is a new function whose first
// deploy is under way on the node that created it (its name and address are taken);
// nodes do not serve it yet.
struct FunctionSpec {
  std::string name = {};
  std::string ip = {};
  SpecVersion serving = {};
  std::vector<SpecVersion> kept = {};  // newest first
  uint64_t latest = 0;                 // the highest version number given out
  int64_t mod_revision = 0;            // of the key, when read

  bool pending() const { return serving.manifest_digest.empty(); }
  // The spec with `next` serving (numbered latest + 1), the serving one kept first,
  // at most `keep` versions in all.
  FunctionSpec WithVersion(SpecVersion next, size_t keep) const;
  // The spec with kept `version` (0: the newest kept) serving again; kNotFound when it
  // is not kept.
  Result<FunctionSpec> RolledBack(uint64_t version) const;
};

nlohmann::json ToJson(const FunctionSpec& spec);
// kInvalidArgument for a document that is not a spec of `name`.
Result<FunctionSpec> SpecFromJson(const std::string& name, const std::string& text);
nlohmann::json ToJson(const SpecVersion& version);

struct NodeInfo {
  std::string name = {};
  std::string address = {};  // where its API or BGP session is reached (informational)
  std::string version = {};  // faasd's release
};

struct NodeStatus {
  std::string function = {};
  std::string node = {};
  uint64_t version = 0;
  bool ready = false;
  std::string error = {};  // why not, when not ready
};
// A status key's value (ClusterState::Report); a value that is not one reads as not
// ready.
NodeStatus StatusFromJson(const std::string& function, const std::string& node,
                          const std::string& text);

class ClusterState {
 public:
  ClusterState(Etcd& etcd, std::string prefix = "/faasd/");

  // Every function's spec, and the store's revision they were read at (watch from +1).
  Result<std::vector<FunctionSpec>> Functions(int64_t* revision = nullptr);
  // One spec; kNotFound when there is none.
  Result<FunctionSpec> Function(const std::string& name);

  // Writes a new function: its name and the lowest address of `pool` no function holds,
  // in one transaction (retried over addresses another node took meanwhile). Returns
  // the spec as written (with its ip). kConflict when the name exists already (a
  // redeploy: use Update), kExhausted when the pool is.
  Result<FunctionSpec> Create(FunctionSpec spec, const net::IpPool& pool);
  // Writes `spec` as the next version over the one read (spec.mod_revision); kConflict
  // when another write came first (read it again), kNotFound when it was removed.
  Result<FunctionSpec> Update(FunctionSpec spec);
  // Removes the function, its address and its status keys; kNotFound when absent.
  // With `mod_revision`, only the spec read at that revision (kConflict otherwise).
  Status Remove(const std::string& name, int64_t mod_revision = 0);

  // A node's liveness key under `lease`.
  Status Announce(const NodeInfo& node, int64_t lease);
  Result<std::vector<NodeInfo>> Nodes();
  // A node's report on one function, under the node's `lease`.
  Status Report(const NodeStatus& status, int64_t lease);
  Status Unreport(const std::string& function, const std::string& node);
  Result<std::vector<NodeStatus>> Statuses(const std::string& function);

  std::string FunctionsPrefix() const { return prefix_ + "functions/"; }
  std::string StatusPrefix() const { return prefix_ + "status/"; }
  const std::string& prefix() const { return prefix_; }
  Etcd& etcd() { return etcd_; }

 private:
  Etcd& etcd_;
  std::string prefix_;
};

}  // namespace faas::cluster
