// This faasd as a member of a cluster: its liveness in etcd.
//
// A thread of its own grants a lease (its TTL bounds how long a dead node is listed),
// writes nodes/NODE under it (ClusterState::Announce) and renews it every third of the
// TTL. Renewals that fail (etcd unreachable, no quorum) are retried each second; the
// node keeps serving what it has and says so (Health). A lease that expired meanwhile
// is replaced and the node announced again. Each round also reads the list of nodes,
// which the API serves from memory: nothing on the event loop waits for etcd. Stop
// revokes the lease, so the node leaves the list at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd.h"
#include "cluster/state.h"

namespace faas::cluster {

struct NodeOptions {
  EtcdOptions etcd;
  std::string prefix = "/faasd/";
  NodeInfo self;                 // name, advertise address, version
  std::chrono::seconds ttl{10};  // of the node's lease
  std::chrono::milliseconds retry{1000};
};

class Node {
 public:
  explicit Node(NodeOptions options);
  ~Node();  // Stop()
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Starts the thread. The first announce is tried at once; its failure does not stop
  // faasd (see Health).
  void Start();
  // Revokes the lease (best effort) and ends the thread. Idempotent.
  void Stop();

  // This node's report on a function (ClusterState::Report), written by the thread
  // under the node's lease, and again under a new lease; Unreport deletes it.
  void Report(NodeStatus status);
  void Unreport(const std::string& function);

  struct Health {
    bool announced = false;       // the node's key is in etcd under a live lease
    std::string error;            // the last failure talking to etcd, while not announced
    std::vector<NodeInfo> nodes;  // the nodes listed at the last round
    std::chrono::system_clock::time_point as_of{};  // of `nodes`
  };
  Health health() const;
  const NodeInfo& self() const { return options_.self; }

 private:
  void Run();
  void Round();
  void WriteReports();

  NodeOptions options_;
  Etcd etcd_;
  ClusterState state_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  Health health_;
  std::map<std::string, NodeStatus> reports_;  // function -> the latest report
  std::set<std::string> unwritten_;            // functions whose report etcd lacks
  bool reports_failed_ = false;                // since the last round
  int64_t lease_ = 0;                          // the thread's
  std::chrono::steady_clock::time_point last_renewal_{};
  std::thread thread_;
};

}  // namespace faas::cluster
