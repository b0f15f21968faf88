#include "cluster/state.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

namespace faas::cluster {
namespace {

using nlohmann::json;

// Tries at most this many addresses taken meanwhile by other nodes before giving up.
constexpr int kMaxCreateAttempts = 64;

Result<json> ParseObject(const std::string& text, const std::string& what) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return MakeError(Errc::kInvalidArgument, what + ": not a JSON object");
  return doc;
}

}  // namespace

json ToJson(const SpecVersion& version) {
  return {{"version", version.version},
          {"image_ref", version.image_ref},
          {"manifest_digest", version.manifest_digest},
          {"platform", version.platform},
          {"options", version.options},
          {"deployed_at", version.deployed_at},
          {"deployed_by", version.deployed_by}};
}

json ToJson(const FunctionSpec& spec) {
  json doc = ToJson(spec.serving);
  doc["ip"] = spec.ip;
  doc["latest"] = spec.latest;
  doc["kept"] = json::array();
  for (const SpecVersion& kept : spec.kept) doc["kept"].push_back(ToJson(kept));
  return doc;
}

namespace {

SpecVersion VersionFromJson(const json& doc) {
  SpecVersion version;
  version.version = doc.at("version").get<uint64_t>();
  version.image_ref = doc.at("image_ref").get<std::string>();
  version.manifest_digest = doc.at("manifest_digest").get<std::string>();
  version.platform = doc.value("platform", std::string());
  version.options = doc.value("options", json::object());
  version.deployed_at = doc.value("deployed_at", std::string());
  version.deployed_by = doc.value("deployed_by", std::string());
  if (!version.options.is_object()) throw std::invalid_argument("options: not an object");
  return version;
}

}  // namespace

Result<FunctionSpec> SpecFromJson(const std::string& name, const std::string& text) {
  FAAS_ASSIGN_OR_RETURN(json doc, ParseObject(text, "spec of " + name));
  try {
    FunctionSpec spec;
    spec.name = name;
    spec.ip = doc.at("ip").get<std::string>();
    spec.serving = VersionFromJson(doc);
    for (const json& kept : doc.value("kept", json::array()))
      spec.kept.push_back(VersionFromJson(kept));
    spec.latest = std::max(doc.value("latest", uint64_t{0}), spec.serving.version);
    if (!net::Ipv4::Parse(spec.ip).ok())
      return MakeError(Errc::kInvalidArgument, "spec of " + name + ": bad ip " + spec.ip);
    return spec;
  } catch (const std::exception& e) {
    return MakeError(Errc::kInvalidArgument, "spec of " + name + ": " + e.what());
  }
}

FunctionSpec FunctionSpec::WithVersion(SpecVersion next, size_t keep) const {
  FunctionSpec spec = *this;
  next.version = latest + 1;
  spec.latest = next.version;
  spec.kept.clear();
  if (!pending()) spec.kept.push_back(serving);
  for (const SpecVersion& old : kept) spec.kept.push_back(old);
  if (spec.kept.size() + 1 > keep) spec.kept.resize(keep > 0 ? keep - 1 : 0);
  spec.serving = std::move(next);
  return spec;
}

Result<FunctionSpec> FunctionSpec::RolledBack(uint64_t version) const {
  auto it = std::find_if(kept.begin(), kept.end(), [&](const SpecVersion& v) {
    return version == 0 || v.version == version;
  });
  if (it == kept.end()) {
    if (version == serving.version)
      return MakeError(Errc::kConflict,
                       "version " + std::to_string(version) + " of " + name + " serves already");
    return MakeError(Errc::kNotFound, version == 0 ? name + " has no earlier version kept"
                                                   : "version " + std::to_string(version) + " of " +
                                                         name + " is not kept");
  }
  FunctionSpec spec = *this;
  spec.serving = *it;
  spec.kept.clear();
  spec.kept.push_back(serving);
  for (const SpecVersion& old : kept)
    if (old.version != it->version) spec.kept.push_back(old);
  return spec;
}

NodeStatus StatusFromJson(const std::string& function, const std::string& node,
                          const std::string& text) {
  NodeStatus status{.function = function, .node = node, .version = 0, .ready = false, .error = {}};
  json doc = json::parse(text, nullptr, false);
  if (doc.is_object()) {
    status.version = doc.value("version", uint64_t{0});
    status.ready = doc.value("ready", false);
    status.error = doc.value("error", std::string());
  }
  return status;
}

ClusterState::ClusterState(Etcd& etcd, std::string prefix)
    : etcd_(etcd), prefix_(std::move(prefix)) {}

Result<std::vector<FunctionSpec>> ClusterState::Functions(int64_t* revision) {
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> kvs,
                        etcd_.Range(FunctionsPrefix(), /*prefix=*/true, revision));
  std::vector<FunctionSpec> specs;
  for (const KeyValue& kv : kvs) {
    auto spec = SpecFromJson(kv.key.substr(FunctionsPrefix().size()), kv.value);
    if (!spec.ok()) return std::move(spec).error();
    spec->mod_revision = kv.mod_revision;
    specs.push_back(std::move(*spec));
  }
  return specs;
}

Result<FunctionSpec> ClusterState::Function(const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, etcd_.Range(FunctionsPrefix() + name));
  if (kvs.empty()) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
  FAAS_ASSIGN_OR_RETURN(FunctionSpec spec, SpecFromJson(name, kvs[0].value));
  spec.mod_revision = kvs[0].mod_revision;
  return spec;
}

Result<FunctionSpec> ClusterState::Create(FunctionSpec spec, const net::IpPool& pool) {
  const std::string key = FunctionsPrefix() + spec.name;
  for (int attempt = 0; attempt < kMaxCreateAttempts; ++attempt) {
    FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> held, etcd_.Range(prefix_ + "ips/", true));
    std::set<net::Ipv4> taken;
    for (const KeyValue& kv : held) {
      if (auto ip = net::Ipv4::Parse(kv.key.substr(prefix_.size() + 4)); ip.ok()) taken.insert(*ip);
    }
    FAAS_ASSIGN_OR_RETURN(net::Ipv4 ip, pool.Allocate(taken));
    spec.ip = ip.ToString();
    const std::string ip_key = prefix_ + "ips/" + spec.ip;
    FAAS_ASSIGN_OR_RETURN(
        bool created,
        etcd_.Txn({{.key = key, .target = Compare::Target::kCreate, .revision = 0},
                   {.key = ip_key, .target = Compare::Target::kCreate, .revision = 0}},
                  {{.kind = Op::Kind::kPut, .key = key, .value = ToJson(spec).dump(), .lease = 0},
                   {.kind = Op::Kind::kPut, .key = ip_key, .value = spec.name, .lease = 0}}));
    if (created) return Function(spec.name);
    FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> existing, etcd_.Range(key));
    if (!existing.empty())
      return MakeError(Errc::kConflict, "a function named '" + spec.name + "' exists already");
    // The address went to another node's function meanwhile: the next one.
  }
  return MakeError(Errc::kUnavailable, "could not take an address for '" + spec.name +
                                           "': other nodes kept taking them");
}

Result<FunctionSpec> ClusterState::Update(FunctionSpec spec) {
  const std::string key = FunctionsPrefix() + spec.name;
  FAAS_ASSIGN_OR_RETURN(bool written,
                        etcd_.CompareAndPut(key, ToJson(spec).dump(), spec.mod_revision));
  if (written) return Function(spec.name);
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> existing, etcd_.Range(key));
  if (existing.empty()) return MakeError(Errc::kNotFound, "no function named '" + spec.name + "'");
  return MakeError(Errc::kConflict,
                   "'" + spec.name + "' was changed by another deploy meanwhile: try again");
}

Status ClusterState::Remove(const std::string& name, int64_t mod_revision) {
  FAAS_ASSIGN_OR_RETURN(FunctionSpec spec, Function(name));
  if (mod_revision != 0 && spec.mod_revision != mod_revision)
    return MakeError(Errc::kConflict, "'" + name + "' was changed by a deploy meanwhile");
  const std::string key = FunctionsPrefix() + name;
  FAAS_ASSIGN_OR_RETURN(
      bool removed,
      etcd_.Txn({{.key = key, .target = Compare::Target::kMod, .revision = spec.mod_revision}},
                {{.kind = Op::Kind::kDelete, .key = key, .value = {}, .lease = 0},
                 {.kind = Op::Kind::kDelete,
                  .key = prefix_ + "ips/" + spec.ip,
                  .value = {},
                  .lease = 0}}));
  if (!removed)
    return MakeError(Errc::kConflict, "'" + name + "' was changed by a deploy meanwhile");
  FAAS_RETURN_IF_ERROR(etcd_.Delete(prefix_ + "status/" + name + "/", true));
  return Ok();
}

Status ClusterState::Announce(const NodeInfo& node, int64_t lease) {
  json doc = {{"address", node.address}, {"version", node.version}};
  FAAS_RETURN_IF_ERROR(etcd_.Put(prefix_ + "nodes/" + node.name, doc.dump(), lease));
  return Ok();
}

Result<std::vector<NodeInfo>> ClusterState::Nodes() {
  const std::string nodes = prefix_ + "nodes/";
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, etcd_.Range(nodes, true));
  std::vector<NodeInfo> out;
  for (const KeyValue& kv : kvs) {
    json doc = json::parse(kv.value, nullptr, false);
    NodeInfo info{.name = kv.key.substr(nodes.size()), .address = {}, .version = {}};
    if (doc.is_object()) {
      info.address = doc.value("address", std::string());
      info.version = doc.value("version", std::string());
    }
    out.push_back(std::move(info));
  }
  return out;
}

Status ClusterState::Report(const NodeStatus& status, int64_t lease) {
  json doc = {{"version", status.version}, {"ready", status.ready}};
  if (!status.error.empty()) doc["error"] = status.error;
  FAAS_RETURN_IF_ERROR(
      etcd_.Put(prefix_ + "status/" + status.function + "/" + status.node, doc.dump(), lease));
  return Ok();
}

Status ClusterState::Unreport(const std::string& function, const std::string& node) {
  FAAS_RETURN_IF_ERROR(etcd_.Delete(prefix_ + "status/" + function + "/" + node));
  return Ok();
}

Result<std::vector<NodeStatus>> ClusterState::Statuses(const std::string& function) {
  const std::string dir = prefix_ + "status/" + function + "/";
  FAAS_ASSIGN_OR_RETURN(std::vector<KeyValue> kvs, etcd_.Range(dir, true));
  std::vector<NodeStatus> out;
  for (const KeyValue& kv : kvs)
    out.push_back(StatusFromJson(function, kv.key.substr(dir.size()), kv.value));
  return out;
}

}  // namespace faas::cluster
