#include "cluster/node.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <utility>
#include <vector>

namespace faas::cluster {

Node::Node(NodeOptions options)
    : options_(std::move(options)), etcd_(options_.etcd), state_(etcd_, options_.prefix) {}

Node::~Node() { Stop(); }

void Node::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Node::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Node::Health Node::health() const {
  std::lock_guard lock(mutex_);
  return health_;
}

void Node::Report(NodeStatus status) {
  status.node = options_.self.name;
  {
    std::lock_guard lock(mutex_);
    unwritten_.insert(status.function);
    reports_[status.function] = std::move(status);
  }
  wake_.notify_all();
}

void Node::Unreport(const std::string& function) {
  {
    std::lock_guard lock(mutex_);
    if (reports_.erase(function) == 0) return;
    unwritten_.insert(function);
  }
  wake_.notify_all();
}

void Node::Run() {
  for (;;) {
    const auto began = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mutex_);
      reports_failed_ = false;
    }
    Round();
    std::unique_lock lock(mutex_);
    const auto wait = health_.announced ? options_.ttl / 3 : options_.retry;
    // Reports are written as they come; the lease is renewed on its own schedule. A
    // report that fails waits for the next round (which renews or replaces the lease).
    while (!stopping_ && std::chrono::steady_clock::now() < began + wait) {
      const bool woken = wake_.wait_until(lock, began + wait, [this] {
        return stopping_ || (health_.announced && !reports_failed_ && !unwritten_.empty());
      });
      if (!woken || stopping_) break;
      lock.unlock();
      WriteReports();
      lock.lock();
    }
    if (stopping_) break;
  }
  if (lease_ != 0) {
    // Leaving: the node's keys go at once, not when the lease would expire. An etcd
    // that does not answer within a second per member is left to expire it.
    Etcd quick({.endpoints = options_.etcd.endpoints, .timeout = std::chrono::seconds(1)});
    if (Status st = quick.Revoke(lease_); !st.ok())
      spdlog::warn("cluster: could not revoke the lease of node {}: {}", options_.self.name,
                   st.error().message);
    lease_ = 0;
  }
}

// One round: renew (or get) the lease and announce, then read the nodes.
void Node::Round() {
  auto fail = [this](const Error& error) {
    std::lock_guard lock(mutex_);
    if (health_.announced || health_.error != error.message)
      spdlog::warn("cluster: node {}: {}", options_.self.name, error.message);
    health_.announced = false;
    health_.error = error.message;
  };
  const auto now = std::chrono::steady_clock::now();
  if (lease_ != 0) {
    auto ttl = etcd_.KeepAlive(lease_);
    if (ttl.ok() && *ttl > 0) {
      last_renewal_ = now;
    } else if (ttl.ok() || now - last_renewal_ >= options_.ttl) {
      lease_ = 0;  // expired: its keys are gone, a new one is needed
    }
    if (!ttl.ok()) return fail(ttl.error());
  }
  if (lease_ == 0) {
    auto lease = etcd_.GrantLease(options_.ttl);
    if (!lease.ok()) return fail(lease.error());
    lease_ = *lease;
    last_renewal_ = now;
    if (Status st = state_.Announce(options_.self, lease_); !st.ok()) return fail(st.error());
    spdlog::info("cluster: node {} announced in etcd", options_.self.name);
    std::lock_guard lock(mutex_);
    for (const auto& [function, status] : reports_) unwritten_.insert(function);
  }
  WriteReports();
  auto nodes = state_.Nodes();
  if (!nodes.ok()) return fail(nodes.error());
  std::lock_guard lock(mutex_);
  health_.announced = true;
  health_.error.clear();
  health_.nodes = std::move(*nodes);
  health_.as_of = std::chrono::system_clock::now();
}

// Writes the reports etcd lacks under the lease (deletes those withdrawn); what fails
// stays for the next round.
void Node::WriteReports() {
  std::vector<std::string> functions;
  {
    std::lock_guard lock(mutex_);
    functions.assign(unwritten_.begin(), unwritten_.end());
  }
  for (const std::string& function : functions) {
    std::optional<NodeStatus> status;
    {
      std::lock_guard lock(mutex_);
      unwritten_.erase(function);
      if (auto it = reports_.find(function); it != reports_.end()) status = it->second;
    }
    Status st =
        status ? state_.Report(*status, lease_) : state_.Unreport(function, options_.self.name);
    if (!st.ok()) {
      std::lock_guard lock(mutex_);
      unwritten_.insert(function);
      reports_failed_ = true;
      spdlog::debug("cluster: report on {}: {}", function, st.error().message);
      return;
    }
  }
}

}  // namespace faas::cluster
