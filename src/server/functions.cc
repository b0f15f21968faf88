#include "server/functions.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <random>
#include <sstream>

#include "common/file.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "runtime/bundle.h"
#include "runtime/process.h"

namespace faas::server {

namespace asio = boost::asio;

inline constexpr char kAddressLabel[] = "lo:faas";

struct Functions::Function {
  std::shared_ptr<RootfsVersion> rootfs;
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Scaler> scaler;
};

namespace {

std::string RandomHex(int digits) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream out;
  out << std::hex << (rng() & ((1ull << (4 * digits)) - 1));
  std::string s = out.str();
  return std::string(static_cast<size_t>(digits) - s.size(), '0') + s;
}

std::string NowRfc3339() {
  auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Runs a program to completion and returns its stdout (start-up only: blocks).
Result<std::string> RunAndCapture(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return SysError(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  auto child = runtime::Spawn({argv, -1, write_end.get(), -1});
  write_end.Reset();
  if (!child.ok()) return std::move(child).error();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  FAAS_ASSIGN_OR_RETURN(int status, child->Wait());
  if (status != 0)
    return MakeError(Errc::kInternal,
                     argv[0] + " " + argv[3] + ": " + runtime::DescribeWaitStatus(status));
  return out;
}

}  // namespace

Functions::Functions(asio::io_context& io, const store::StateDir& state, FunctionsOptions options,
                     RootfsVersion::Remover remover)
    : io_(io),
      state_(state),
      options_(std::move(options)),
      remover_(std::move(remover)),
      registry_(state.RegistryPath()),
      rejector_(io),
      id_prefix_("faas-" + RandomHex(6) + "-"),
      tick_timer_(io),
      claim_watch_(io) {}

Functions::~Functions() = default;

Status Functions::Start() {
  FAAS_ASSIGN_OR_RETURN(pool_, net::IpPool::Parse(options_.pool));
  FAAS_ASSIGN_OR_RETURN(claim_, net::PoolClaim::Take(*pool_));
  AnswerClaimQueries();
  FAAS_ASSIGN_OR_RETURN(netlink_, net::Netlink::Open());
  FAAS_ASSIGN_OR_RETURN(lo_index_, net::LoopbackIndex());
  FAAS_RETURN_IF_ERROR(net::EnablePromoteSecondaries("lo"));
  FAAS_RETURN_IF_ERROR(MakeDirs(options_.runtime.runtime_root));
  FAAS_RETURN_IF_ERROR(registry_.Load());
  FAAS_RETURN_IF_ERROR(RemoveLeftovers());
  for (const auto& [name, record] : registry_.functions()) {
    if (auto st = Restore(name, record); !st.ok())
      spdlog::error("cannot restore function {}: {}", name, st.error().message);
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
  std::map<std::string, uint64_t> live;
  for (const auto& [name, record] : registry_.functions()) live[name] = record.version;
  // What is left only costs disk space; refusing to start would stop every function.
  for (const Error& left : state_.RemoveStale(live))
    spdlog::warn("state dir clean-up left something behind: {}", left.message);
  const auto& rt = options_.runtime;
  FAAS_ASSIGN_OR_RETURN(std::string ids,
                        RunAndCapture({rt.runtime, "--root", rt.runtime_root, "list", "--quiet"}));
  std::istringstream lines(ids);
  for (std::string id; std::getline(lines, id);) {
    if (id.empty()) continue;
    spdlog::info("removing container {} left by an earlier faasd", id);
    auto del = runtime::Spawn({{rt.runtime, "--root", rt.runtime_root, "delete", "--force", id}});
    if (del.ok()) (void)del->Wait();
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
  if (!claim_watch_.is_open()) {
    int fd = ::fcntl(claim_->fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return;
    claim_watch_.assign(fd);
  }
  claim_watch_.async_wait(asio::posix::stream_descriptor::wait_read,
                          [this](boost::system::error_code ec) {
                            if (ec) return;
                            claim_->AcceptAndClose();
                            AnswerClaimQueries();
                          });
}

Status Functions::Restore(const std::string& name, const store::FunctionRecord& record) {
  FAAS_ASSIGN_OR_RETURN(net::Ipv4 ip, net::Ipv4::Parse(record.ip));
  // The registry names the version; the link may be off by one after a crash.
  const std::string version_dir = state_.VersionPath(name, record.version);
  struct stat st;
  if (::lstat(version_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return MakeError(Errc::kIo, "rootfs " + version_dir + " is missing");
  FAAS_RETURN_IF_ERROR(state_.PointRootfsAt(name, record.version));
  FAAS_RETURN_IF_ERROR(AddAddress(ip));
  FAAS_ASSIGN_OR_RETURN(auto listener, Listen(name, ip));
  auto fn = std::make_unique<Function>();
  fn->rootfs = std::make_shared<RootfsVersion>(version_dir, remover_);
  fn->listener = std::move(listener);
  fn->scaler = MakeScaler(name, record.scaling);
  functions_[name] = std::move(fn);
  spdlog::info("serving {} at {}:{}", name, record.ip, options_.listener.port);
  return Ok();
}

Result<net::Ipv4> Functions::AllocateIp() {
  std::set<net::Ipv4> taken;
  FAAS_ASSIGN_OR_RETURN(auto addresses, netlink_->ListIpv4());
  for (const auto& addr : addresses) taken.insert(addr.address);
  for (const auto& [name, record] : registry_.functions()) {
    if (auto ip = net::Ipv4::Parse(record.ip); ip.ok()) taken.insert(*ip);
  }
  return pool_->Allocate(taken);
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
  FAAS_ASSIGN_OR_RETURN(auto listener, Listener::Open(io_, name, ip, options_.listener, waiting_,
                                                      [this, name](UniqueFd client) {
                                                        OnClient(name, std::move(client));
                                                      }));
  listener->Start();
  return listener;
}

void Functions::OnClient(const std::string& name, UniqueFd client) {
  if (shutting_down_) return;
  if (auto it = functions_.find(name); it != functions_.end())
    it->second->scaler->OnClient(std::move(client));
}

std::vector<std::string> Functions::PausedListeners() const {
  std::vector<std::string> paused;
  for (const auto& [name, fn] : functions_)
    if (fn->listener && fn->listener->paused()) paused.push_back(name);
  return paused;
}

std::string Functions::NextContainerId() { return id_prefix_ + std::to_string(++next_id_); }

std::unique_ptr<Scaler> Functions::MakeScaler(const std::string& name,
                                              const store::ScalingOptions& options) {
  return std::make_unique<Scaler>(io_, rejector_, name, options, [this, name](UniqueFd client) {
    return MakeContainer(name, std::move(client));
  });
}

std::shared_ptr<Container> Functions::MakeContainer(const std::string& name, UniqueFd client) {
  auto it = functions_.find(name);
  const store::FunctionRecord* record = registry_.Find(name);
  if (shutting_down_ || it == functions_.end() || record == nullptr) return nullptr;
  FunctionSnapshot snapshot{
      name,        it->second->rootfs, record->cmd,    record->env,         record->working_dir,
      record->uid, record->gid,        record->limits, record->userns_base, record->scaling.reuse};
  auto container = std::make_shared<Container>(
      io_, options_.runtime, std::move(snapshot), NextContainerId(), std::move(client),
      [this](Container* c) { OnContainerDone(c); }, [this](Container* c) { OnContainerIdle(c); });
  containers_[container.get()] = container;
  return container;
}

// Whether a container of `name` holds (or held) a client: that connection lives on
// the function's address. Containers still waiting in a pool do not count.
bool Functions::ServingClients(const std::string& name) const {
  return std::any_of(containers_.begin(), containers_.end(), [&name](const auto& entry) {
    return entry.first->function_name() == name && entry.first->served();
  });
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

void Functions::OnContainerIdle(Container* container) {
  if (auto it = functions_.find(container->function_name()); it != functions_.end()) {
    it->second->scaler->OnIdle(container);
  } else {
    container->Kill("function removed");
  }
}

void Functions::OnContainerDone(Container* container) {
  const std::string name = container->function_name();
  // Keeps the container alive through its scaler's bookkeeping.
  std::shared_ptr<Container> self = containers_.at(container);
  if (auto it = functions_.find(name); it != functions_.end())
    it->second->scaler->OnDone(container);
  containers_.erase(container);
  if (auto it = retiring_.find(name); it != retiring_.end()) {
    it->second.containers.erase(container);
    if (it->second.containers.empty()) {
      auto waiters = std::move(it->second.waiters);
      retiring_.erase(it);
      for (auto& then : waiters) then();
    }
  }
  if (auto it = removed_addresses_.find(name);
      it != removed_addresses_.end() && !ServingClients(name)) {
    RemoveAddress(it->second);
    removed_addresses_.erase(it);
  }
  if (shutting_down_) MaybeFinishShutdown();
}

void Functions::AfterOldPoolGone(const std::string& name, std::function<void()> then) {
  auto it = retiring_.find(name);
  if (it == retiring_.end()) return then();
  it->second.waiters.push_back(std::move(then));
}

Status Functions::BeginDeploy(const std::string& name) {
  if (shutting_down_) return MakeError(Errc::kUnavailable, "faasd is shutting down");
  if (!deploying_.insert(name).second)
    return MakeError(Errc::kConflict, "a deploy of '" + name + "' is already under way");
  return Ok();
}

void Functions::AbortDeploy(const std::string& name) {
  deploying_.erase(name);
  if (shutting_down_) MaybeFinishShutdown();
}

Result<store::FunctionRecord> Functions::CommitDeploy(ImportedImage image) {
  const std::string name = image.name;
  ScopeGuard end_deploy([&] { AbortDeploy(name); });
  bool existed = functions_.count(name) > 0;
  ScopeGuard remove_new([&] {
    (void)RemoveTree(image.new_rootfs);
    if (!existed) ::rmdir(state_.FunctionDir(name).c_str());
  });
  if (shutting_down_) return MakeError(Errc::kUnavailable, "faasd is shutting down");

  store::FunctionRecord record;
  const store::FunctionRecord* old = registry_.Find(name);
  if (old) record = *old;
  record.rootfs = state_.RootfsPath(name);
  record.cmd = image.config.cmd;
  record.env = store::MergeEnv(image.config.env, image.options.env);
  record.working_dir = image.config.working_dir;
  record.user = image.config.user;
  record.uid = image.user.uid;
  record.gid = image.user.gid;
  record.limits = image.options.limits;
  record.scaling = image.options.scaling;
  record.userns_base = image.userns_base;
  record.deployed_at = NowRfc3339();

  // The import becomes version directory vN, which is never renamed again. A version
  // of a removed function of the same name may still serve its last requests: skip it.
  record.version = old ? old->version + 1 : 1;
  struct stat st;
  while (::lstat(state_.VersionPath(name, record.version).c_str(), &st) == 0) ++record.version;
  const std::string version_dir = state_.VersionPath(name, record.version);
  if (::rename(image.new_rootfs.c_str(), version_dir.c_str()) != 0)
    return SysError(errno, "rename rootfs of " + name);
  image.new_rootfs = version_dir;  // what `remove_new` deletes on failure from here on
  Result<store::FunctionRecord> result =
      existed ? Redeploy(name, std::move(record)) : DeployNew(name, std::move(record));
  if (result.ok()) remove_new.Dismiss();
  return result;
}

Result<store::FunctionRecord> Functions::Redeploy(const std::string& name,
                                                  store::FunctionRecord record) {
  Function& fn = *functions_.at(name);
  const store::FunctionRecord previous = *registry_.Find(name);
  // Requests starting from now on get the new version; running ones keep theirs.
  FAAS_RETURN_IF_ERROR(state_.PointRootfsAt(name, record.version));
  registry_.Put(name, record);
  if (auto st = registry_.Save(); !st.ok()) {
    registry_.Put(name, previous);
    (void)state_.PointRootfsAt(name, previous.version);
    return std::move(st).error();
  }
  fn.rootfs->Retire(fn.rootfs->path());
  fn.rootfs = std::make_shared<RootfsVersion>(state_.VersionPath(name, record.version), remover_);
  for (const auto& stopped : fn.scaler->Reload(record.scaling))
    retiring_[name].containers.insert(stopped.get());
  spdlog::info("redeployed {} (version {}) at {}", name, record.version, record.ip);
  return record;
}

Result<store::FunctionRecord> Functions::DeployNew(const std::string& name,
                                                   store::FunctionRecord record) {
  FAAS_ASSIGN_OR_RETURN(net::Ipv4 ip, AllocateIp());
  record.ip = ip.ToString();
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
  auto fn = std::make_unique<Function>();
  fn->rootfs = std::make_shared<RootfsVersion>(state_.VersionPath(name, record.version), remover_);
  fn->listener = std::move(listener);
  fn->scaler = MakeScaler(name, record.scaling);
  Scaler& scaler = *fn->scaler;
  functions_[name] = std::move(fn);
  scaler.Refill();
  spdlog::info("deployed {} at {}:{}", name, record.ip, options_.listener.port);
  return record;
}

Status Functions::Remove(const std::string& name) {
  const store::FunctionRecord* record = registry_.Find(name);
  auto it = functions_.find(name);
  if (record == nullptr) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  if (deploying_.count(name))
    return MakeError(Errc::kConflict, "a deploy of '" + name + "' is under way");
  store::FunctionRecord removed = *record;
  registry_.Erase(name);
  if (auto st = registry_.Save(); !st.ok()) {
    registry_.Put(name, removed);
    return std::move(st).error();
  }
  (void)state_.UnlinkRootfs(name);
  if (it != functions_.end()) {
    it->second->scaler->Stop();
    it->second->rootfs->Retire(it->second->rootfs->path());
    functions_.erase(it);  // closes the listener; running requests keep their rootfs
  }
  // Running requests' connections live on the address: it goes when the last one ends.
  if (auto ip = net::Ipv4::Parse(removed.ip); ip.ok()) {
    if (!ServingClients(name)) {
      RemoveAddress(*ip);
    } else {
      removed_addresses_[name] = *ip;
    }
  }
  spdlog::info("removed {}", name);
  return Ok();
}

void Functions::Shutdown(std::chrono::milliseconds drain, std::function<void()> done) {
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  tick_timer_.cancel();
  for (auto& [name, fn] : functions_) {
    fn->listener.reset();
    fn->scaler->Stop();
  }
  spdlog::info("shutting down: {} request(s) running, {} import(s)", containers_.size(),
               deploying_.size());
  drain_timer_ = std::make_unique<asio::steady_timer>(io_, drain);
  drain_timer_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    spdlog::warn("drain timeout: killing {} request(s)", containers_.size());
    std::vector<std::shared_ptr<Container>> running;
    for (auto& [ptr, c] : containers_) running.push_back(c);
    for (auto& c : running) c->Kill("shutdown");
  });
  MaybeFinishShutdown();
}

void Functions::MaybeFinishShutdown() {
  if (!containers_.empty() || !deploying_.empty() || !shutdown_done_) return;
  drain_timer_.reset();
  for (net::Ipv4 ip : std::set<net::Ipv4>(added_)) RemoveAddress(ip);
  functions_.clear();
  auto done = std::move(shutdown_done_);
  done();
}

}  // namespace faas::server
