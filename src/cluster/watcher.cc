#include "cluster/watcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace faas::cluster {
namespace {

// NAME and NODE of a status key, given what follows the status prefix; false when it
// is not one.
bool SplitStatusKey(const std::string& rest, std::string* name, std::string* node) {
  const size_t slash = rest.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size()) return false;
  *name = rest.substr(0, slash);
  *node = rest.substr(slash + 1);
  return true;
}

}  // namespace

Watcher::Watcher(WatcherOptions options, std::function<void()> on_change)
    : options_(std::move(options)),
      on_change_(std::move(on_change)),
      etcd_(options_.etcd),
      state_(etcd_, options_.prefix) {}

Watcher::~Watcher() { Stop(); }

void Watcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Watcher::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Watcher::View Watcher::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

void Watcher::Run() {
  while (!stopping_) {
    auto revision = ReadAll();
    if (!revision.ok()) {
      Failed(revision.error());
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, options_.retry, [this] { return stopping_.load(); });
      continue;
    }
    const auto until = std::chrono::steady_clock::now() + options_.resync;
    Status st = etcd_.Watch(
        options_.prefix, *revision + 1,
        [this, until] { return stopping_ || std::chrono::steady_clock::now() >= until; },
        [this](const std::vector<WatchEvent>& events, int64_t) { Apply(events); });
    if (!st.ok() && !stopping_) {
      spdlog::debug("cluster: watch of {}: {}", options_.prefix, st.error().message);
    }
  }
}

Result<int64_t> Watcher::ReadAll() {
  int64_t revision = 0;
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> kvs,
                        etcd_.Range(options_.prefix, /*prefix=*/true, &revision));
  std::vector<WatchEvent> puts;
  puts.reserve(kvs.size());
  for (KeyValue& kv : kvs) puts.push_back({.deleted = false, .kv = std::move(kv)});
  View read;
  Fold(puts, &read);
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    if (!view_.error.empty())
      spdlog::info("cluster: following etcd again ({} function(s))", read.specs.size());
    changed =
        !view_.synced ||
        !std::equal(read.specs.begin(), read.specs.end(), view_.specs.begin(), view_.specs.end(),
                    [](const auto& a, const auto& b) {
                      return a.first == b.first && a.second.mod_revision == b.second.mod_revision;
                    });
    read.synced = true;
    view_ = std::move(read);
  }
  if (changed) on_change_();
  return revision;
}

void Watcher::Apply(const std::vector<WatchEvent>& events) {
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    changed = Fold(events, &view_);
  }
  if (changed) on_change_();
}

bool Watcher::Fold(const std::vector<WatchEvent>& events, View* view) const {
  const std::string functions = state_.FunctionsPrefix(), status = state_.StatusPrefix();
  bool changed = false;
  for (const WatchEvent& event : events) {
    const std::string& key = event.kv.key;
    if (key.starts_with(functions)) {
      const std::string name = key.substr(functions.size());
      changed = true;
      if (event.deleted) {
        view->specs.erase(name);
        view->statuses.erase(name);
        continue;
      }
      auto spec = SpecFromJson(name, event.kv.value);
      if (!spec.ok()) {
        spdlog::warn("cluster: ignoring {}", spec.error().message);
        continue;
      }
      spec->mod_revision = event.kv.mod_revision;
      view->specs[name] = std::move(*spec);
    } else if (std::string name, node;
               key.starts_with(status) && SplitStatusKey(key.substr(status.size()), &name, &node)) {
      if (event.deleted) {
        auto it = view->statuses.find(name);
        if (it != view->statuses.end()) it->second.erase(node);
      } else {
        view->statuses[name][node] = StatusFromJson(name, node, event.kv.value);
      }
    }
  }
  return changed;
}

void Watcher::Failed(const Error& error) {
  std::lock_guard lock(mutex_);
  if (view_.error != error.message)
    spdlog::warn("cluster: cannot read the cluster's functions: {}", error.message);
  view_.error = error.message;
}

}  // namespace faas::cluster
