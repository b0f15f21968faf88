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

struct FunctionSpec {
  std::string name = {};
  std::string ip = {};
  uint64_t version = 0;
  std::string image_ref = {};        // canonical reference as deployed
  std::string manifest_digest = {};  // what every node pulls: ref@digest
  std::string platform = {};
  nlohmann::json options = nlohmann::json::object();  // the deploy options in force
  std::string deployed_at = {};
  std::string deployed_by = {};  // the node that wrote it
  int64_t mod_revision = 0;      // of the key, when read
};

nlohmann::json ToJson(const FunctionSpec& spec);
// kInvalidArgument for a document that is not a spec of `name`.
Result<FunctionSpec> SpecFromJson(const std::string& name, const std::string& text);

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
  Status Remove(const std::string& name);

  // A node's liveness key under `lease`.
  Status Announce(const NodeInfo& node, int64_t lease);
  Result<std::vector<NodeInfo>> Nodes();
  // A node's report on one function, under the node's `lease`.
  Status Report(const NodeStatus& status, int64_t lease);
  Status Unreport(const std::string& function, const std::string& node);
  Result<std::vector<NodeStatus>> Statuses(const std::string& function);

  std::string FunctionsPrefix() const { return prefix_ + "functions/"; }
  Etcd& etcd() { return etcd_; }

 private:
  Etcd& etcd_;
  std::string prefix_;
};

}  // namespace faas::cluster
