// The cluster's functions and the nodes' reports on them, as this node last read
// them. A thread of its own reads functions/ and status/ (one range of the prefix),
// then follows them with a watch from the revision after. When the watch breaks (a
// member died, etcd compacted past it) or has been quiet for `resync` (a member cut
// off from the others may stay silent), it reads the whole range again. Nothing on
// the event loop waits for etcd: the loop reads the view, and `on_change` tells it
// when the specs changed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/state.h"

namespace faas::cluster {

struct WatcherOptions {
  EtcdOptions etcd;
  std::string prefix = "/faasd/";
  std::chrono::milliseconds retry{1000};    // after a failed read
  std::chrono::milliseconds resync{30000};  // a watch lasts at most this long
};

class Watcher {
 public:
  // `on_change` runs on the watcher's thread after the specs changed (and after the
  // first read); it must not block.
  Watcher(WatcherOptions options, std::function<void()> on_change);
  ~Watcher();  // Stop()
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  void Start();
  void Stop();  // idempotent

  struct View {
    bool synced = false;  // the specs were read at least once
    std::string error;    // the last failure talking to etcd, while not following it
    std::map<std::string, FunctionSpec> specs;
    // function -> node -> its report
    std::map<std::string, std::map<std::string, NodeStatus>> statuses;
  };
  View view() const;

 private:
  void Run();
  // Reads the prefix; the revision to watch from.
  Result<int64_t> ReadAll();
  void Apply(const std::vector<WatchEvent>& events);
  // Applies `events` (a range's keys as puts, or a watch's batch) to `view`; whether a
  // spec changed.
  bool Fold(const std::vector<WatchEvent>& events, View* view) const;
  void Failed(const Error& error);

  WatcherOptions options_;
  std::function<void()> on_change_;
  Etcd etcd_;
  ClusterState state_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stopping_{false};
  View view_;
  std::thread thread_;
};

}  // namespace faas::cluster
