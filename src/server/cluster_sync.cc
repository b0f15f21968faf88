#include "server/cluster_sync.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <utility>

#include "pull/reference.h"
#include "store/names.h"

namespace faas::server {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// Whether `record` is the version `want` describes: the same image and settings.
bool Matches(const store::FunctionRecord& record, const cluster::SpecVersion& want) {
  return record.manifest_digest == want.manifest_digest && record.options == want.options;
}

// The reference a node pulls a spec's version by: its repository at the digest.
Result<std::string> DigestReference(const cluster::SpecVersion& version) {
  FAAS_ASSIGN_OR_RETURN(pull::Reference ref, pull::ParseReference(version.image_ref));
  ref.tag.clear();
  ref.digest = version.manifest_digest;
  return ref.String();
}

}  // namespace

// A deploy the API asked this node for, from its start to the spec written.
struct ClusterSync::UserDeploy {
  std::string name;
  bool by_reference = false;
  std::shared_ptr<const api::DeployCancel> cancel;
  api::Backend::DeployDone done;
  std::optional<cluster::FunctionSpec> read;  // the spec, as read before the commit
  bool created = false;                       // read is the new function's, made by us
};

ClusterSync::ClusterSync(asio::io_context& io, asio::thread_pool& workers, Functions& functions,
                         Deployer& deployer, Publisher& publisher, cluster::Node& node,
                         cluster::Watcher& watcher, ClusterSyncOptions options)
    : io_(io),
      workers_(workers),
      functions_(functions),
      deployer_(deployer),
      publisher_(publisher),
      node_(node),
      watcher_(watcher),
      options_(std::move(options)),
      etcd_(options_.etcd),
      state_(etcd_, options_.prefix),
      retry_timer_(io) {
  if (!options_.bird.routes_file.empty()) bird_.emplace(options_.bird);
}

ClusterSync::~ClusterSync() = default;

Status ClusterSync::Start() {
  FAAS_ASSIGN_OR_RETURN(net::IpPool pool, net::IpPool::Parse(options_.pool));
  pool_ = pool;
  if (bird_) FAAS_RETURN_IF_ERROR(bird_->Open());
  ExportRoutes();
  return Ok();
}

// ---- Converging --------------------------------------------------------------------

void ClusterSync::OnChange() {
  if (stopping_) return;
  view_ = watcher_.view();
  if (!view_.synced) return;
  // Removals first: a new function may get the address of one removed.
  std::vector<std::string> gone;
  for (const auto& [name, record] : functions_.registry().functions())
    if (!view_.specs.contains(name)) gone.push_back(name);
  for (const std::string& name : gone) Converge(name);
  for (const auto& [name, spec] : view_.specs) Converge(name);
  ExportRoutes();
}

void ClusterSync::Converge(const std::string& name) {
  if (stopping_ || user_deploys_.contains(name)) return;
  if (converging_.contains(name)) {
    again_.insert(name);
    return;
  }
  const store::FunctionRecord* local = functions_.registry().Find(name);
  auto it = view_.specs.find(name);
  if (it == view_.specs.end()) {
    if (local == nullptr) return;
    spdlog::info("cluster: {} is no longer in the cluster: removing it here", name);
    if (RemoveHere(name)) node_.Unreport(name);
    return;
  }
  const cluster::FunctionSpec& spec = it->second;
  if (spec.pending()) return;  // its first deploy is under way on the node that made it
  const cluster::SpecVersion& want = spec.serving;
  if (local != nullptr && local->ip != spec.ip) {
    // Removed and made again at another address while this node was away.
    spdlog::info("cluster: {} moved from {} to {}: removing it here first", name, local->ip,
                 spec.ip);
    if (!RemoveHere(name)) return;
    local = nullptr;
  }
  if (local != nullptr && Matches(*local, want)) return Report(name, want.version, true, "");
  if (local != nullptr) {
    for (const store::FunctionRecord& kept : functions_.registry().Kept(name)) {
      if (!Matches(kept, want)) continue;
      auto rolled = functions_.Rollback(name, kept.version);
      if (!rolled.ok()) break;  // deploy it again instead
      spdlog::info("cluster: {} serves version {} again (kept here as v{})", name, want.version,
                   kept.version);
      Report(name, want.version, true, "");
      return ExportRoutes();
    }
  }
  auto reference = DigestReference(want);
  if (!reference.ok()) return Report(name, want.version, false, reference.error().message);
  json header = want.options;
  header["reset"] = true;  // exactly the spec's settings
  header["image"] = *reference;
  if (!want.platform.empty()) header["platform"] = want.platform;
  if (local == nullptr) header["ip"] = spec.ip;
  spdlog::info("cluster: deploying version {} of {} ({})", want.version, name, *reference);
  converging_.insert(name);
  Report(name, want.version, false, "deploying");
  auto cancel = std::make_shared<api::DeployCancel>();
  cancels_[name] = cancel;
  auto pipe = deployer_.Start(
      name, header.dump(), cancel, [this, name, version = want.version](Result<json> result) {
        ConvergeDone(name, version, result.ok() ? Ok() : Status(result.error()));
      });
  if (!pipe.ok()) ConvergeDone(name, want.version, Status(pipe.error()));
  // A deploy by reference reads no body: its pipe closes here.
}

// Removes `name` here and withdraws its route; false (and a retry later) when it cannot
// go now.
bool ClusterSync::RemoveHere(const std::string& name) {
  if (Status st = functions_.Remove(name); !st.ok()) {
    spdlog::warn("cluster: remove {}: {}", name, st.error().message);
    RetryLater();
    return false;
  }
  ExportRoutes();
  return true;
}

void ClusterSync::ConvergeDone(const std::string& name, uint64_t version, const Status& result) {
  converging_.erase(name);
  cancels_.erase(name);
  if (stopping_) return;
  if (result.ok()) {
    Report(name, version, true, "");
  } else {
    spdlog::warn("cluster: version {} of {} does not serve here: {}", version, name,
                 result.error().message);
    Report(name, version, false, result.error().message);
    RetryLater();
  }
  ExportRoutes();
  if (again_.erase(name) > 0) Converge(name);
}

void ClusterSync::Report(const std::string& name, uint64_t version, bool ready,
                         const std::string& error) {
  node_.Report({.function = name, .node = {}, .version = version, .ready = ready, .error = error});
}

void ClusterSync::RetryLater() {
  if (retry_armed_ || stopping_) return;
  retry_armed_ = true;
  retry_timer_.expires_after(options_.retry);
  retry_timer_.async_wait([this](boost::system::error_code ec) {
    retry_armed_ = false;
    if (!ec) OnChange();
  });
}

// ---- Routes ------------------------------------------------------------------------

// Every function that serves here and that the cluster has: bird exports their /32s.
// One export at a time; the last one wins.
void ClusterSync::ExportRoutes() {
  if (!bird_) {
    if (stopping_) FinishWithdraw(/*grace=*/false);
    return;
  }
  std::set<std::string> ips;
  if (!stopping_) {
    for (const auto& [name, record] : functions_.registry().functions())
      if (view_.specs.contains(name) || user_deploys_.contains(name)) ips.insert(record.ip);
  }
  if (exporting_) {
    export_again_ = true;
    return;
  }
  if (exported_ == ips) {
    if (stopping_) FinishWithdraw(/*grace=*/true);
    return;
  }
  exporting_ = true;
  asio::post(workers_, [this, ips] {
    Status st = bird_->Export(ips);
    asio::post(io_, [this, ips, st] {
      exporting_ = false;
      if (st.ok()) {
        exported_ = ips;
        spdlog::info("cluster: bird exports {} route(s)", ips.size());
      } else {
        exported_.reset();
        spdlog::warn("cluster: routes not exported: {}", st.error().message);
        if (stopping_) return FinishWithdraw(/*grace=*/false);
        RetryLater();
      }
      if (std::exchange(export_again_, false) || stopping_) ExportRoutes();
    });
  });
}

// The routes are withdrawn (or cannot be): the drain may begin. With `grace`, this
// node accepts connections a little longer, while the router applies the withdrawal.
void ClusterSync::FinishWithdraw(bool grace) {
  if (withdrawn_.empty()) return;
  auto finish = [this] {
    for (auto& then : std::exchange(withdrawn_, {})) then();
  };
  if (!grace || options_.withdraw_grace.count() == 0) return finish();
  retry_timer_.expires_after(options_.withdraw_grace);
  retry_timer_.async_wait([finish](boost::system::error_code) { finish(); });
}

void ClusterSync::Withdraw(std::function<void()> then) {
  stopping_ = true;
  retry_timer_.cancel();
  for (auto& [name, cancel] : cancels_) cancel->Cancel();
  withdrawn_.push_back(std::move(then));
  ExportRoutes();
}

// ---- The API's operations ----------------------------------------------------------

Result<UniqueFd> ClusterSync::Deploy(const std::string& name, const std::string& options_header,
                                     std::shared_ptr<const api::DeployCancel> cancel,
                                     api::Backend::DeployDone done) {
  FAAS_RETURN_IF_ERROR(store::ValidateName(name));
  json header =
      options_header.empty() ? json::object() : json::parse(options_header, nullptr, false);
  if (header.is_object() && header.contains("ip")) {
    return MakeError(Errc::kInvalidArgument,
                     "ip: a cluster hands out addresses itself (in etcd); deploy without --ip");
  }
  auto op = std::make_shared<UserDeploy>();
  op->name = name;
  op->by_reference = header.is_object() && header.contains("image");
  if (!op->by_reference && options_.registry.empty()) {
    return MakeError(Errc::kInvalidArgument,
                     "a cluster node deploys images from a registry: deploy with --image REF, or "
                     "start faasd with --registry HOST/PATH to push archives there");
  }
  if (user_deploys_.contains(name) || converging_.contains(name))
    return MakeError(Errc::kConflict, "a deploy of " + name + " is under way on this node");
  op->cancel = cancel;
  op->done = std::move(done);
  auto pipe = deployer_.Start(
      name, options_header, std::move(cancel),
      [this, op](Result<json> result) { Deployed(op, std::move(result)); },
      [this, op](const std::string&, std::function<void(Result<net::Ipv4>)> then) {
        Reserve(op, std::move(then));
      });
  if (pipe.ok()) user_deploys_[name] = op;
  return pipe;
}

// Before the commit: the spec as it is now, or a new function's name and address.
void ClusterSync::Reserve(const std::shared_ptr<UserDeploy>& op,
                          std::function<void(Result<net::Ipv4>)> then) {
  asio::post(workers_, [this, op, then = std::move(then)]() mutable {
    auto spec = state_.Function(op->name);
    bool created = false;
    if (!spec.ok() && spec.error().code == Errc::kNotFound) {
      spec = state_.Create({.name = op->name}, *pool_);
      created = spec.ok();
    }
    asio::post(io_, [op, spec = std::move(spec), created, then = std::move(then)]() mutable {
      if (!spec.ok()) return then(std::move(spec).error().Wrap("cluster"));
      if (!created && spec->pending()) {
        return then(MakeError(Errc::kConflict,
                              "the first deploy of " + op->name + " is under way on another node"));
      }
      op->read = *spec;
      op->created = created;
      auto ip = net::Ipv4::Parse(spec->ip);
      then(std::move(ip));
    });
  });
}

// The deploy ended here: on success the version serves on this node, and the spec
// gets it (an archive's tree pushed to the registry first).
void ClusterSync::Deployed(const std::shared_ptr<UserDeploy>& op, Result<json> result) {
  if (!result.ok()) return FinishDeploy(op, std::move(result).error());
  const store::FunctionRecord* record = functions_.registry().Find(op->name);
  if (record == nullptr)
    return FinishDeploy(op, MakeError(Errc::kInternal, op->name + " vanished after its deploy"));
  cluster::SpecVersion version{.version = 0,
                               .image_ref = record->image_ref,
                               .manifest_digest = record->manifest_digest,
                               .platform = record->platform,
                               .options = record->options,
                               .deployed_at = record->deployed_at,
                               .deployed_by = node_.self().name};
  if (op->by_reference) return WriteSpec(op, std::move(version), std::move(*result));
  const uint64_t next = op->read ? op->read->latest + 1 : 1;
  const std::string image = options_.registry + "/" + op->name + ":v" + std::to_string(next);
  auto pushed = [this, op, version, reply = std::move(*result)](Result<json> push) mutable {
    if (!push.ok()) {
      return FinishDeploy(op, std::move(push).error().Wrap(
                                  "the version serves on this node only: push to the cluster's "
                                  "registry"));
    }
    version.image_ref = push->value("image", std::string());
    version.manifest_digest = push->value("manifest_digest", std::string());
    version.platform = pull::HostPlatform().String();
    WriteSpec(op, std::move(version), std::move(reply));
  };
  if (Status st = publisher_.Start(op->name, image, record->version, op->cancel, pushed); !st.ok())
    FinishDeploy(op, std::move(st).error().Wrap("push to the cluster's registry"));
}

// Writes `version` as the spec's next one over the revision read (the unchanged
// answer of a deploy by reference writes nothing if the spec serves it already).
void ClusterSync::WriteSpec(const std::shared_ptr<UserDeploy>& op, cluster::SpecVersion version,
                            json reply) {
  asio::post(workers_, [this, op, version = std::move(version),
                        reply = std::move(reply)]() mutable {
    Result<cluster::FunctionSpec> written = [&]() -> Result<cluster::FunctionSpec> {
      cluster::FunctionSpec base;
      if (op->read) {
        base = *op->read;
      } else {
        FAAS_ASSIGN_OR_RETURN(base, state_.Function(op->name));
      }
      if (!base.pending() && base.serving.manifest_digest == version.manifest_digest &&
          base.serving.options == version.options)
        return base;
      return state_.Update(base.WithVersion(std::move(version), options_.keep_versions));
    }();
    asio::post(io_, [this, op, written = std::move(written), reply = std::move(reply)]() mutable {
      if (!written.ok()) {
        return FinishDeploy(
            op, std::move(written).error().Wrap("the version serves on this node only: the "
                                                "cluster's spec was not written"));
      }
      reply["version"] = written->serving.version;
      reply["node"] = node_.self().name;
      view_.specs[op->name] = *written;
      FinishDeploy(op, std::move(reply));
    });
  });
}

void ClusterSync::FinishDeploy(const std::shared_ptr<UserDeploy>& op, Result<json> answer) {
  user_deploys_.erase(op->name);
  const bool ok = answer.ok();
  if (ok) {
    Report(op->name, view_.specs[op->name].serving.version, true, "");
  } else if (op->created) {
    // The name and address taken for this deploy go back.
    asio::post(workers_, [this, name = op->name, revision = op->read->mod_revision] {
      if (Status st = state_.Remove(name, revision); !st.ok())
        spdlog::warn("cluster: {} stays taken: {}", name, st.error().message);
    });
  }
  op->done(std::move(answer));
  ExportRoutes();
  // What the failed deploy left here goes back to the spec.
  if (!ok) Converge(op->name);
}

void ClusterSync::Remove(const std::string& name, api::Backend::DeployDone done) {
  asio::post(workers_, [this, name, done = std::move(done)]() mutable {
    Status removed = state_.Remove(name);
    asio::post(io_, [this, name, removed, done = std::move(done)] {
      const bool here = functions_.registry().Find(name) != nullptr;
      if (!removed.ok() && !(removed.error().code == Errc::kNotFound && here))
        return done(removed.error());
      view_.specs.erase(name);
      if (here) {
        if (Status st = functions_.Remove(name); !st.ok()) return done(st.error());
      }
      node_.Unreport(name);
      ExportRoutes();
      done(json{{"name", name}});
    });
  });
}

void ClusterSync::Rollback(const std::string& name, std::optional<uint64_t> version,
                           api::Backend::DeployDone done) {
  asio::post(workers_, [this, name, version, done = std::move(done)]() mutable {
    uint64_t from = 0;
    Result<cluster::FunctionSpec> written = [&]() -> Result<cluster::FunctionSpec> {
      FAAS_ASSIGN_OR_RETURN(cluster::FunctionSpec spec, state_.Function(name));
      from = spec.serving.version;
      FAAS_ASSIGN_OR_RETURN(cluster::FunctionSpec rolled, spec.RolledBack(version.value_or(0)));
      return state_.Update(std::move(rolled));
    }();
    asio::post(io_, [this, name, from, written = std::move(written), done = std::move(done)] {
      if (!written.ok()) return done(written.error());
      view_.specs[name] = *written;
      Converge(name);
      done(json{{"name", name},
                {"ip", written->ip},
                {"version", written->serving.version},
                {"from_version", from}});
    });
  });
}

// ---- Answers -----------------------------------------------------------------------

json ClusterSync::ClusterJson(const cluster::Watcher::View& view, const std::string& name,
                              const cluster::FunctionSpec& spec) {
  json nodes = json::object();
  if (auto it = view.statuses.find(name); it != view.statuses.end()) {
    for (const auto& [node, status] : it->second) {
      json entry = {{"version", status.version}, {"ready", status.ready}};
      if (!status.error.empty()) entry["error"] = status.error;
      nodes[node] = std::move(entry);
    }
  }
  return {{"version", spec.serving.version},
          {"image_ref", spec.serving.image_ref},
          {"manifest_digest", spec.serving.manifest_digest},
          {"deployed_by", spec.serving.deployed_by},
          {"nodes", std::move(nodes)}};
}

json ClusterSync::List(json local) const {
  const cluster::Watcher::View view = watcher_.view();
  for (const auto& [name, spec] : view.specs) {
    if (spec.pending()) continue;
    json& entry = local[name];
    if (entry.is_object()) {
      entry["local_version"] = entry["version"];
    } else {
      entry = {{"ip", spec.ip}, {"cmd", json::array()}};
    }
    entry["version"] = spec.serving.version;
    entry["cluster"] = ClusterJson(view, name, spec);
  }
  return local;
}

Result<json> ClusterSync::Describe(const std::string& name, Result<json> local) const {
  const cluster::Watcher::View view = watcher_.view();
  auto it = view.specs.find(name);
  if (it == view.specs.end() || it->second.pending()) return local;
  json out = local.ok() ? std::move(*local) : json{{"name", name}, {"ip", it->second.ip}};
  if (out.contains("version")) out["local_version"] = out["version"];
  out["version"] = it->second.serving.version;
  out["cluster"] = ClusterJson(view, name, it->second);
  return out;
}

Result<json> ClusterSync::GetIp(const std::string& name) const {
  const cluster::Watcher::View view = watcher_.view();
  auto it = view.specs.find(name);
  if (it == view.specs.end() || it->second.pending())
    return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  return json{{"name", name}, {"ip", it->second.ip}};
}

}  // namespace faas::server
