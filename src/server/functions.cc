#include "server/functions.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <random>
#include <sstream>

#include "common/file.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "runtime/bundle.h"

namespace faas::server {

namespace asio = boost::asio;

inline constexpr char kAddressLabel[] = "lo:faas";

struct Functions::Function {
  net::Ipv4 ip;
  std::shared_ptr<RootfsVersion> rootfs;  // the serving version's
  // The kept versions' (see Registry::Kept): not removed while kept.
  std::map<uint64_t, std::shared_ptr<RootfsVersion>> kept;
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Scaler> scaler;
  bool address_removed = false;  // once removed, when its last client is gone
};

namespace {

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string RandomHex(int digits) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream out;
  out << std::hex << (rng() & ((1ull << (4 * digits)) - 1));
  std::string s = out.str();
  return std::string(static_cast<size_t>(digits) - s.size(), '0') + s;
}

// The one place a function's settings become what its containers run.
}  // namespace

// The one place a function's record becomes a container's spec.
ContainerConfig Functions::ConfigFor(const std::string& name, const store::FunctionRecord& record,
                                     std::shared_ptr<RootfsVersion> rootfs) {
  runtime::ContainerSpec spec{
      .rootfs = rootfs->path(),
      .args = record.cmd,
      .env = record.env,
      .cwd = record.working_dir,
      .uid = record.uid,
      .gid = record.gid,
      .memory_bytes = record.limits.memory_bytes,
      .cpu_quota_us = uint64_t{record.limits.cpu_millis} * 100,
      .pids_limit = record.limits.pids,
      .run_timeout_ms = record.limits.timeout_ms,
      .reuse = record.scaling.reuse,
      .userns_base = record.userns_base,
  };
  return {.function = name,
          .version = record.version,
          .rootfs = std::move(rootfs),
          .spec = std::move(spec),
          .connect_timeout = std::chrono::milliseconds(record.limits.connect_timeout_ms),
          .telemetry = &gate_};
}

bool Functions::Gate::Open(std::string_view function) const {
  const std::string name(function);
  return functions_.functions_.count(name) > 0 || functions_.deploying_.count(name) > 0;
}

void Functions::Gate::OnRequest(const RequestRecord& record) {
  if (Open(record.function)) sink_.OnRequest(record);
}

void Functions::Gate::OnOutput(const OutputLine& line) {
  if (Open(line.function)) sink_.OnOutput(line);
}

void Functions::Gate::OnContainerStarted(std::string_view function, bool pooled) {
  if (Open(function)) sink_.OnContainerStarted(function, pooled);
}

Functions::Functions(asio::io_context& io, const store::StateDir& state, runtime::Runtime& runtime,
                     FunctionsOptions options, RootfsVersion::Remover remover, Telemetry& telemetry)
    : io_(io),
      state_(state),
      runtime_(runtime),
      options_(std::move(options)),
      remover_(std::move(remover)),
      telemetry_(telemetry),
      gate_(*this, telemetry),
      clock_(io),
      registry_(state.RegistryPath()),
      rejector_(io),
      id_prefix_("faas-" + RandomHex(6) + "-"),
      tick_timer_(io),
      claim_watch_(io) {}

Functions::~Functions() = default;

Status Functions::Start() {
  FAAS_ASSIGN_OR_RETURN(pool_, net::IpPool::Parse(options_.pool));
  FAAS_ASSIGN_OR_RETURN(net::PoolClaim claim, net::PoolClaim::Take(*pool_));
  claim_watch_.assign(std::move(claim).TakeFd().Release());
  AnswerClaimQueries();
  FAAS_ASSIGN_OR_RETURN(netlink_, net::Netlink::Open());
  FAAS_ASSIGN_OR_RETURN(lo_index_, net::LoopbackIndex());
  FAAS_RETURN_IF_ERROR(net::EnablePromoteSecondaries("lo"));
  FAAS_RETURN_IF_ERROR(registry_.Load());
  FAAS_RETURN_IF_ERROR(RemoveLeftovers());
  bool forgot = false;
  for (const auto& [name, record] : registry_.functions()) {
    if (auto st = Restore(name, record); !st.ok())
      spdlog::error("cannot restore function {}: {}", name, st.error().message);
    else
      forgot |= RestoreKept(name, *functions_.at(name));
  }
  if (forgot) {
    if (auto st = registry_.Save(); !st.ok())
      spdlog::error("cannot save the registry: {}", st.error().message);
  }
  spdlog::info("{} function(s) restored from {}", functions_.size(), registry_.path());
  Tick();
  return Ok();
}

void Functions::Tick() {
  for (auto& [name, fn] : functions_) fn->scaler->Tick();
  tick_timer_.expires_after(std::chrono::seconds(1));
  tick_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !shutting_down_) Tick();
  });
}

Status Functions::RemoveLeftovers() {
  std::map<std::string, std::set<uint64_t>> live;
  for (const auto& [name, record] : registry_.functions()) {
    live[name].insert(record.version);
    for (const auto& kept : registry_.Kept(name)) live[name].insert(kept.version);
  }
  // What is left only costs disk space; refusing to start would stop every function.
  for (const Error& left : state_.RemoveStale(live))
    spdlog::warn("state dir clean-up left something behind: {}", left.message);
  FAAS_ASSIGN_OR_RETURN(std::vector<std::string> ids, runtime_.List());
  for (const std::string& id : ids) {
    spdlog::info("removing container {} left by an earlier faasd", id);
    if (auto del = runtime_.Delete(id); del.ok()) (void)del->Wait();
  }
  std::set<std::string> registered;
  for (const auto& [name, record] : registry_.functions()) registered.insert(record.ip);
  FAAS_ASSIGN_OR_RETURN(auto addresses, netlink_->ListIpv4());
  for (const auto& addr : addresses) {
    // Only our pool's: no other live faasd in this namespace has an overlapping one.
    if (addr.label != kAddressLabel || !pool_->Contains(addr.address) ||
        registered.count(addr.address.ToString()))
      continue;
    spdlog::info("removing stale address {} ({})", addr.address.ToString(), kAddressLabel);
    (void)netlink_->DeleteAddress(addr.ifindex, addr.address, addr.prefix_len);
  }
  return Ok();
}

// Another faasd starting in this namespace connects to the claim to learn our pid.
void Functions::AnswerClaimQueries() {
  claim_watch_.async_wait(asio::posix::stream_descriptor::wait_read,
                          [this](boost::system::error_code ec) {
                            if (ec) return;
                            net::PoolClaim::AcceptAndClose(claim_watch_.native_handle());
                            AnswerClaimQueries();
                          });
}

Status Functions::Restore(const std::string& name, const store::FunctionRecord& record) {
  FAAS_ASSIGN_OR_RETURN(net::Ipv4 ip, net::Ipv4::Parse(record.ip));
  // The registry names the version; the link may be off by one after a crash.
  const std::string version_dir = state_.VersionPath(name, record.version);
  if (!IsDirectory(version_dir))
    return MakeError(Errc::kIo, "rootfs " + version_dir + " is missing");
  FAAS_RETURN_IF_ERROR(state_.PointRootfsAt(name, record.version));
  FAAS_RETURN_IF_ERROR(AddAddress(ip));
  FAAS_ASSIGN_OR_RETURN(auto listener, Listen(name, ip));
  functions_[name] =
      MakeFunction(name, ip, record, std::move(listener), VersionOf(name, record, nullptr));
  spdlog::info("serving {} at {}:{}", name, record.ip, options_.listener.port);
  return Ok();
}

// The kept versions whose directory is gone cannot serve again: the registry forgets
// them. Returns whether it did.
bool Functions::RestoreKept(const std::string& name, Function& fn) {
  std::vector<store::FunctionRecord> kept;
  for (const store::FunctionRecord& record : registry_.Kept(name)) {
    const std::string dir = state_.VersionPath(name, record.version);
    if (!IsDirectory(dir)) {
      spdlog::warn("kept version {} of {} is missing ({}): forgotten", record.version, name, dir);
      continue;
    }
    fn.kept[record.version] = std::make_shared<RootfsVersion>(dir, remover_);
    kept.push_back(record);
  }
  if (kept.size() == registry_.Kept(name).size()) return false;
  registry_.PutKept(name, std::move(kept));
  return true;
}

std::unique_ptr<Functions::Function> Functions::MakeFunction(
    const std::string& name, net::Ipv4 ip, const store::FunctionRecord& record,
    std::unique_ptr<Listener> listener, std::shared_ptr<RootfsVersion> rootfs) {
  auto fn = std::make_unique<Function>();
  fn->ip = ip;
  fn->rootfs = std::move(rootfs);
  fn->listener = std::move(listener);
  fn->scaler = std::make_unique<Scaler>(
      clock_, rejector_, gate_, name, record.scaling,
      [this, name](Client client, Instance::Events events) {
        return MakeContainer(name, std::move(client), std::move(events));
      },
      [this] { OnContainerGone(); });
  return fn;
}

Result<std::set<net::Ipv4>> Functions::TakenAddresses() {
  std::set<net::Ipv4> taken;
  FAAS_ASSIGN_OR_RETURN(auto addresses, netlink_->ListIpv4());
  for (const auto& addr : addresses) taken.insert(addr.address);
  for (const auto& [name, record] : registry_.functions()) {
    if (auto ip = net::Ipv4::Parse(record.ip); ip.ok()) taken.insert(*ip);
  }
  return taken;
}

Result<net::Ipv4> Functions::AllocateIp() {
  FAAS_ASSIGN_OR_RETURN(std::set<net::Ipv4> taken, TakenAddresses());
  return pool_->Allocate(taken);
}

Status Functions::CheckFreeAddress(net::Ipv4 ip) {
  if (!pool_) return MakeError(Errc::kUnavailable, "faasd is not started");
  if (!pool_->Contains(ip)) {
    return MakeError(Errc::kInvalidArgument, "ip: " + ip.ToString() + " is not in faasd's pool " +
                                                 pool_->ToString() + " (from " +
                                                 pool_->first().ToString() + " to " +
                                                 pool_->last().ToString() + ")");
  }
  FAAS_ASSIGN_OR_RETURN(std::set<net::Ipv4> taken, TakenAddresses());
  if (taken.count(ip)) {
    for (const auto& [name, record] : registry_.functions())
      if (record.ip == ip.ToString())
        return MakeError(Errc::kConflict, "ip: " + ip.ToString() + " is " + name + "'s");
    return MakeError(Errc::kConflict, "ip: " + ip.ToString() + " is taken on the interface");
  }
  return Ok();
}

Status Functions::AddAddress(net::Ipv4 ip) {
  Status st = netlink_->AddAddress(lo_index_, ip, pool_->prefix_len(), kAddressLabel);
  if (st.ok()) {
    added_.insert(ip);
    return Ok();
  }
  if (st.error().code != Errc::kConflict) return std::move(st).error().Wrap("add " + ip.ToString());
  // Already there: ours if it carries our label (left by a crash), else the host's.
  FAAS_ASSIGN_OR_RETURN(auto addresses, netlink_->ListIpv4());
  for (const auto& addr : addresses) {
    if (addr.address == ip && addr.label == kAddressLabel) added_.insert(ip);
  }
  return Ok();
}

void Functions::RemoveAddress(net::Ipv4 ip) {
  if (!added_.erase(ip)) return;
  if (auto st = netlink_->DeleteAddress(lo_index_, ip, pool_->prefix_len()); !st.ok())
    spdlog::warn("remove address {}: {}", ip.ToString(), st.error().message);
}

Result<std::unique_ptr<Listener>> Functions::Listen(const std::string& name, net::Ipv4 ip) {
  FAAS_ASSIGN_OR_RETURN(
      auto listener,
      Listener::Open(io_, name, ip, options_.listener, waiting_, [this, name](Client client) {
        if (shutting_down_) return;
        if (auto it = functions_.find(name); it != functions_.end())
          it->second->scaler->OnClient(std::move(client));
      }));
  listener->Start();
  return listener;
}

std::vector<std::string> Functions::PausedListeners() const {
  std::vector<std::string> paused;
  for (const auto& [name, fn] : functions_)
    if (fn->listener && fn->listener->paused()) paused.push_back(name);
  return paused;
}

std::string Functions::NextContainerId() { return id_prefix_ + std::to_string(++next_id_); }

// A container of the function's current version (the scaler of a removed function
// starts none).
std::shared_ptr<Instance> Functions::MakeContainer(const std::string& name, Client client,
                                                   Instance::Events events) {
  auto it = functions_.find(name);
  const store::FunctionRecord* record = registry_.Find(name);
  if (shutting_down_ || it == functions_.end() || record == nullptr) return nullptr;
  std::string id = NextContainerId();
  std::string bundle = state_.BundlePath(id);
  return std::make_shared<Container>(io_, runtime_, ConfigFor(name, *record, it->second->rootfs),
                                     std::move(id), std::move(bundle), std::move(client),
                                     std::move(events));
}

std::shared_ptr<Container> Functions::MakeCandidate(const std::string& name,
                                                    const store::FunctionRecord& record,
                                                    Instance::Events events) {
  if (shutting_down_) return nullptr;
  auto rootfs = VersionOf(name, record, nullptr);
  std::string id = NextContainerId();
  std::string bundle = state_.BundlePath(id);
  return std::make_shared<Container>(io_, runtime_, ConfigFor(name, record, std::move(rootfs)),
                                     std::move(id), std::move(bundle), Client{}, std::move(events));
}

std::shared_ptr<RootfsVersion> Functions::VersionOf(const std::string& name,
                                                    const store::FunctionRecord& record,
                                                    const std::shared_ptr<Container>& first) {
  if (first) return first->rootfs();
  return std::make_shared<RootfsVersion>(state_.VersionPath(name, record.version), remover_);
}

Result<nlohmann::json> Functions::RuntimeStats(const std::string& name) const {
  auto it = functions_.find(name);
  if (it == functions_.end()) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  nlohmann::json stats = it->second->scaler->Stats();
  if (const Listener* listener = it->second->listener.get()) {
    stats["waiting_first_byte"] = listener->waiting();
    stats["first_byte_timeouts"] = listener->stats().first_byte_timeouts;
    stats["refused_waiting"] = listener->stats().refused_waiting;
    stats["accept_errors"] = listener->stats().accept_errors;
    stats["listener_paused"] = listener->paused();
  }
  return stats;
}

// Called by a scaler after one of its containers is gone. A removed function's
// address goes when its last client does, and the function when its last
// container does: not from inside its scaler's call, so later on the loop.
void Functions::OnContainerGone() {
  for (auto& fn : removed_) {
    if (!fn->address_removed && !fn->scaler->serving_clients()) {
      RemoveAddress(fn->ip);
      fn->address_removed = true;
    }
  }
  if (sweep_posted_) return;
  sweep_posted_ = true;
  asio::post(io_, [this] { Sweep(); });
}

void Functions::Sweep() {
  sweep_posted_ = false;
  std::erase_if(removed_, [](const auto& fn) { return fn->scaler->size() == 0; });
  if (shutting_down_) MaybeFinishShutdown();
}

void Functions::AfterOldPoolGone(const std::string& name, std::function<void()> then) {
  auto it = functions_.find(name);
  if (it == functions_.end()) return then();
  it->second->scaler->AfterOldPoolGone(std::move(then));
}

Status Functions::BeginDeploy(const std::string& name, const std::string& what) {
  if (shutting_down_) return MakeError(Errc::kUnavailable, "faasd is shutting down");
  auto [it, began] = deploying_.try_emplace(name, what);
  if (!began)
    return MakeError(Errc::kConflict,
                     "a " + it->second + " of '" + name + "' is already under way");
  return Ok();
}

Status Functions::RecordPush(const std::string& name, uint64_t version, const Pushed& pushed) {
  const store::FunctionRecord* serving = registry_.Find(name);
  if (serving == nullptr) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  auto stamp = [&](store::FunctionRecord& record) {
    bool changed = record.layer_digest != pushed.layer_digest;
    record.layer_digest = pushed.layer_digest;
    record.layer_diff_id = pushed.layer_diff_id;
    record.layer_size = pushed.layer_size;
    if (!record.image_ref.empty()) return changed;
    record.image_ref = pushed.ref;
    record.manifest_digest = pushed.manifest_digest;
    record.platform = pushed.platform;
    return true;
  };
  const store::Registry before = registry_;
  bool changed = false;
  if (serving->version == version) {
    store::FunctionRecord record = *serving;
    changed = stamp(record);
    registry_.Put(name, std::move(record));
  } else {
    std::vector<store::FunctionRecord> kept = registry_.Kept(name);
    auto it = std::find_if(kept.begin(), kept.end(),
                           [&](const store::FunctionRecord& r) { return r.version == version; });
    if (it == kept.end())
      return MakeError(Errc::kNotFound,
                       "no version " + std::to_string(version) + " of '" + name + "' any more");
    changed = stamp(*it);
    registry_.PutKept(name, std::move(kept));
  }
  if (!changed) return Ok();
  if (auto st = registry_.Save(); !st.ok()) {
    registry_ = before;
    return st;
  }
  return Ok();
}

void Functions::EndDeploy(const std::string& name) {
  deploying_.erase(name);
  if (shutting_down_) MaybeFinishShutdown();
}

Result<store::FunctionRecord> Functions::Commit(const std::string& name,
                                                store::FunctionRecord record,
                                                std::shared_ptr<Container> first) {
  if (shutting_down_) return MakeError(Errc::kUnavailable, "faasd is shutting down");
  if (!functions_.count(name)) return DeployNew(name, std::move(record), std::move(first));
  FAAS_ASSIGN_OR_RETURN(store::FunctionRecord serving,
                        Swap(name, std::move(record), std::move(first)));
  spdlog::info("redeployed {} (version {}) at {}", name, serving.version, serving.ip);
  return serving;
}

Result<store::FunctionRecord> Functions::Rollback(const std::string& name,
                                                  std::optional<uint64_t> version) {
  if (shutting_down_) return MakeError(Errc::kUnavailable, "faasd is shutting down");
  const store::FunctionRecord* serving = registry_.Find(name);
  if (serving == nullptr || !functions_.count(name))
    return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  if (auto busy = deploying_.find(name); busy != deploying_.end())
    return MakeError(Errc::kConflict, "a " + busy->second + " of '" + name +
                                          "' is under way: roll back after it has ended");
  if (version == serving->version)
    return MakeError(Errc::kConflict,
                     "version " + std::to_string(*version) + " of '" + name + "' serves already");
  const std::vector<store::FunctionRecord>& kept = registry_.Kept(name);
  auto it = std::find_if(kept.begin(), kept.end(), [&](const store::FunctionRecord& r) {
    return !version || r.version == *version;
  });
  if (it == kept.end()) {
    if (!version)
      return MakeError(Errc::kNotFound, "'" + name + "' has no earlier version to roll back to");
    return MakeError(Errc::kNotFound, "'" + name + "' has no version " + std::to_string(*version) +
                                          " (see faas versions " + name + ")");
  }
  const uint64_t from = serving->version;
  FAAS_ASSIGN_OR_RETURN(store::FunctionRecord back, Swap(name, *it, nullptr));
  spdlog::info("rolled {} back from version {} to version {} at {}", name, from, back.version,
               back.ip);
  return back;
}

// The serving version becomes the first kept one and `record` (a new version, or a
// kept one) serves; its scaler adopts `first`, a ready container of a new version.
// The order of the steps is a redeploy's: the registry decides what serves after a
// crash, and start-up points the link at it again.
Result<store::FunctionRecord> Functions::Swap(const std::string& name, store::FunctionRecord record,
                                              std::shared_ptr<Container> first) {
  Function& fn = *functions_.at(name);
  const store::FunctionRecord previous = *registry_.Find(name);
  const std::vector<store::FunctionRecord> previous_kept = registry_.Kept(name);
  record.ip = previous.ip;
  std::vector<store::FunctionRecord> kept = {previous};
  for (const store::FunctionRecord& r : previous_kept)
    if (r.version != record.version) kept.push_back(r);
  std::vector<uint64_t> dropped;
  while (kept.size() > std::max<size_t>(options_.keep_versions, 1) - 1) {
    dropped.push_back(kept.back().version);
    kept.pop_back();
  }
  // Requests starting from now on get the new version; running ones keep theirs.
  FAAS_RETURN_IF_ERROR(state_.PointRootfsAt(name, record.version));
  registry_.Put(name, record);
  registry_.PutKept(name, std::move(kept));
  if (auto st = registry_.Save(); !st.ok()) {
    registry_.Put(name, previous);
    registry_.PutKept(name, previous_kept);
    (void)state_.PointRootfsAt(name, previous.version);
    return std::move(st).error();
  }
  std::shared_ptr<RootfsVersion> rootfs =
      first ? first->rootfs() : TakeRootfs(name, fn, record.version);
  fn.kept[previous.version] = std::move(fn.rootfs);
  fn.rootfs = std::move(rootfs);
  for (uint64_t version : dropped) {
    auto it = fn.kept.find(version);
    if (it == fn.kept.end()) continue;
    it->second->Retire(it->second->path());  // removed once its last request is done
    fn.kept.erase(it);
  }
  fn.scaler->Reload(record.scaling, std::move(first));
  return record;
}

// The rootfs of `version` of `name`: a kept one's, or a new version's.
std::shared_ptr<RootfsVersion> Functions::TakeRootfs(const std::string& name, Function& fn,
                                                     uint64_t version) {
  auto it = fn.kept.find(version);
  if (it == fn.kept.end())
    return std::make_shared<RootfsVersion>(state_.VersionPath(name, version), remover_);
  std::shared_ptr<RootfsVersion> rootfs = std::move(it->second);
  fn.kept.erase(it);
  return rootfs;
}

Result<store::FunctionRecord> Functions::DeployNew(const std::string& name,
                                                   store::FunctionRecord record,
                                                   std::shared_ptr<Container> first) {
  net::Ipv4 ip;
  if (record.ip.empty()) {
    FAAS_ASSIGN_OR_RETURN(ip, AllocateIp());
    record.ip = ip.ToString();
  } else {
    FAAS_ASSIGN_OR_RETURN(ip, net::Ipv4::Parse(record.ip));
    FAAS_RETURN_IF_ERROR(CheckFreeAddress(ip));
  }
  FAAS_RETURN_IF_ERROR(AddAddress(ip));
  ScopeGuard remove_address([&] { RemoveAddress(ip); });
  FAAS_ASSIGN_OR_RETURN(auto listener, Listen(name, ip));
  FAAS_RETURN_IF_ERROR(state_.PointRootfsAt(name, record.version));
  ScopeGuard unlink_rootfs([&] { (void)state_.UnlinkRootfs(name); });
  registry_.Put(name, record);
  if (auto st = registry_.Save(); !st.ok()) {
    registry_.Erase(name);
    return std::move(st).error();
  }
  unlink_rootfs.Dismiss();
  remove_address.Dismiss();
  auto& fn = functions_[name] =
      MakeFunction(name, ip, record, std::move(listener), VersionOf(name, record, first));
  if (first) fn->scaler->Adopt(std::move(first));
  fn->scaler->Refill();
  spdlog::info("deployed {} at {}:{}", name, record.ip, options_.listener.port);
  return record;
}

Status Functions::Remove(const std::string& name) {
  const store::FunctionRecord* record = registry_.Find(name);
  if (record == nullptr) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  if (auto busy = deploying_.find(name); busy != deploying_.end())
    return MakeError(Errc::kConflict, "a " + busy->second + " of '" + name + "' is under way");
  store::FunctionRecord removed = *record;
  registry_.Erase(name);
  if (auto st = registry_.Save(); !st.ok()) {
    registry_.Put(name, removed);
    return std::move(st).error();
  }
  (void)state_.UnlinkRootfs(name);
  if (auto it = functions_.find(name); it != functions_.end()) {
    std::unique_ptr<Function> fn = std::move(it->second);
    functions_.erase(it);
    fn->listener.reset();
    fn->scaler->Stop();
    fn->rootfs->Retire(fn->rootfs->path());
    fn->rootfs.reset();  // running requests keep theirs
    for (auto& [version, kept] : fn->kept) kept->Retire(kept->path());
    fn->kept.clear();
    // Running requests' connections live on the address: it goes with the last one.
    if (!fn->scaler->serving_clients()) {
      RemoveAddress(fn->ip);
      fn->address_removed = true;
    }
    removed_.push_back(std::move(fn));
    OnContainerGone();  // drops it at once when no container is left
  }
  telemetry_.OnRemoved(name);
  spdlog::info("removed {}", name);
  return Ok();
}

size_t Functions::ContainersAlive() const {
  size_t alive = 0;
  for (const auto& [name, fn] : functions_) alive += fn->scaler->size();
  for (const auto& fn : removed_) alive += fn->scaler->size();
  return alive;
}

void Functions::Shutdown(std::chrono::milliseconds drain, std::function<void()> done) {
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  tick_timer_.cancel();
  for (auto& [name, fn] : functions_) {
    fn->listener.reset();
    fn->scaler->Stop();
  }
  spdlog::info("shutting down: {} request(s) running, {} import(s)", ContainersAlive(),
               deploying_.size());
  drain_timer_ = std::make_unique<asio::steady_timer>(io_, drain);
  drain_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    spdlog::warn("drain timeout: killing {} request(s)", ContainersAlive());
    for (auto& [name, fn] : functions_) fn->scaler->KillAll("shutdown");
    for (auto& fn : removed_) fn->scaler->KillAll("shutdown");
  });
  MaybeFinishShutdown();
}

void Functions::MaybeFinishShutdown() {
  if (ContainersAlive() != 0 || !deploying_.empty() || !shutdown_done_) return;
  drain_timer_.reset();
  for (net::Ipv4 ip : std::set<net::Ipv4>(added_)) RemoveAddress(ip);
  functions_.clear();
  removed_.clear();
  auto done = std::move(shutdown_done_);
  done();
}

}  // namespace faas::server
