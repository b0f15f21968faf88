#include "store/registry.h"

#include <algorithm>
#include <cerrno>
#include <set>

#include "common/file.h"
#include "store/names.h"

namespace faas::store {

nlohmann::json ToJson(const FunctionRecord& r) {
  nlohmann::json json = {{"ip", r.ip},
                         {"rootfs", r.rootfs},
                         {"cmd", r.cmd},
                         {"env", r.env},
                         {"image_env", r.image_env},
                         {"working_dir", r.working_dir},
                         {"user", r.user},
                         {"uid", r.uid},
                         {"userns_base", r.userns_base},
                         {"gid", r.gid},
                         {"limits", ToJson(r.limits)},
                         {"scaling", ToJson(r.scaling)},
                         {"version", r.version},
                         {"deployed_at", r.deployed_at},
                         {"image_digest", r.image_digest},
                         {"options", r.options}};
  if (!r.image_ref.empty()) {
    json["image_ref"] = r.image_ref;
    json["manifest_digest"] = r.manifest_digest;
    json["platform"] = r.platform;
  }
  if (!r.layer_digest.empty()) {
    json["layer"] = {
        {"digest", r.layer_digest}, {"diff_id", r.layer_diff_id}, {"size", r.layer_size}};
  }
  return json;
}

namespace {

// A record written before image_env was: its env less the variables its deploy set
// (a value the deploy replaced is the deploy's; the image's is not known).
std::vector<std::string> ImageEnvOf(const std::vector<std::string>& env,
                                    const nlohmann::json& options) {
  std::set<std::string> set_by_deploy;
  if (options.is_object() && options.contains("env") && options["env"].is_array()) {
    for (const auto& entry : options["env"])
      if (entry.is_string())
        set_by_deploy.insert(
            entry.get<std::string>().substr(0, entry.get<std::string>().find('=')));
  }
  std::vector<std::string> image_env;
  for (const std::string& entry : env)
    if (!set_by_deploy.count(entry.substr(0, entry.find('=')))) image_env.push_back(entry);
  return image_env;
}

}  // namespace

Result<FunctionRecord> FunctionFromJson(const nlohmann::json& json) {
  try {
    FunctionRecord r;
    r.ip = json.at("ip").get<std::string>();
    r.rootfs = json.at("rootfs").get<std::string>();
    r.cmd = json.at("cmd").get<std::vector<std::string>>();
    r.env = json.value("env", std::vector<std::string>{});
    if (json.contains("image_env")) {
      r.image_env = json.at("image_env").get<std::vector<std::string>>();
    } else {
      r.image_env = ImageEnvOf(r.env, json.value("options", nlohmann::json::object()));
    }
    r.working_dir = json.value("working_dir", std::string());
    r.user = json.value("user", std::string());
    r.uid = json.value("uid", uint32_t{0});
    r.gid = json.value("gid", uint32_t{0});
    r.userns_base = json.value("userns_base", uint32_t{0});
    r.limits = LimitsFromJson(json.value("limits", nlohmann::json::object()), FunctionLimits{});
    r.scaling = ScalingFromJson(json.value("scaling", nlohmann::json::object()), ScalingOptions{});
    r.version = json.value("version", uint64_t{1});
    r.deployed_at = json.value("deployed_at", std::string());
    r.image_digest = json.value("image_digest", std::string());
    r.image_ref = json.value("image_ref", std::string());
    r.manifest_digest = json.value("manifest_digest", std::string());
    r.platform = json.value("platform", std::string());
    if (json.contains("layer")) {
      const nlohmann::json& layer = json.at("layer");
      r.layer_digest = layer.at("digest").get<std::string>();
      r.layer_diff_id = layer.at("diff_id").get<std::string>();
      r.layer_size = layer.at("size").get<uint64_t>();
    }
    r.options = json.value("options", nlohmann::json::object());
    if (!r.options.is_object()) return MakeError(Errc::kInternal, "bad function record: options");
    return r;
  } catch (const nlohmann::json::exception& e) {
    return MakeError(Errc::kInternal, std::string("bad function record: ") + e.what());
  }
}

namespace {

// The "versions" of a function's object; none when it has none (an older faasd's file).
Result<std::vector<FunctionRecord>> KeptFromJson(const nlohmann::json& function) {
  std::vector<FunctionRecord> kept;
  auto it = function.find("versions");
  if (it == function.end()) return kept;
  if (!it->is_array()) return MakeError(Errc::kInternal, "bad function record: versions");
  for (const auto& version : *it) {
    FAAS_ASSIGN_OR_RETURN(FunctionRecord record, FunctionFromJson(version));
    kept.push_back(std::move(record));
  }
  return kept;
}

}  // namespace

const FunctionRecord* Registry::Find(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

const std::vector<FunctionRecord>& Registry::Kept(const std::string& name) const {
  static const std::vector<FunctionRecord> kNone;
  auto it = kept_.find(name);
  return it == kept_.end() ? kNone : it->second;
}

void Registry::PutKept(const std::string& name, std::vector<FunctionRecord> kept) {
  if (kept.empty()) {
    kept_.erase(name);
  } else {
    kept_[name] = std::move(kept);
  }
}

uint64_t Registry::LatestVersion(const std::string& name) const {
  const FunctionRecord* serving = Find(name);
  uint64_t latest = serving ? serving->version : 0;
  for (const FunctionRecord& kept : Kept(name)) latest = std::max(latest, kept.version);
  return latest;
}

nlohmann::json Registry::ToJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, record] : functions_) {
    nlohmann::json& fn = out[name] = store::ToJson(record);
    const auto& kept = Kept(name);
    if (kept.empty()) continue;
    nlohmann::json& versions = fn["versions"] = nlohmann::json::array();
    for (const FunctionRecord& r : kept) versions.push_back(store::ToJson(r));
  }
  return out;
}

Status Registry::Load() {
  auto text = ReadFile(path_);
  if (!text.ok()) {
    if (text.error().sys_errno == ENOENT) {
      functions_.clear();
      return Ok();
    }
    return std::move(text).error().Wrap("load registry");
  }
  nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object())
    return MakeError(Errc::kInternal, "registry " + path_ + " is not a JSON object");
  std::map<std::string, FunctionRecord> loaded;
  std::map<std::string, std::vector<FunctionRecord>> kept;
  for (const auto& [name, value] : json.items()) {
    FAAS_RETURN_IF_ERROR_CTX(ValidateName(name), "registry " + path_);
    FAAS_ASSIGN_OR_RETURN(FunctionRecord record, FunctionFromJson(value));
    loaded.emplace(name, std::move(record));
    FAAS_ASSIGN_OR_RETURN(std::vector<FunctionRecord> versions, KeptFromJson(value));
    if (!versions.empty()) kept.emplace(name, std::move(versions));
  }
  functions_ = std::move(loaded);
  kept_ = std::move(kept);
  return Ok();
}

Status Registry::Save() const {
  return AtomicWriteFile(
      path_, ToJson().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", 0600,
      *ops_);
}

}  // namespace faas::store
