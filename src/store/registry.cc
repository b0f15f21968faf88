#include "store/registry.h"

#include <cerrno>

#include "common/file.h"
#include "store/names.h"

namespace faas::store {

nlohmann::json ToJson(const FunctionRecord& r) {
  return {{"ip", r.ip},
          {"rootfs", r.rootfs},
          {"cmd", r.cmd},
          {"env", r.env},
          {"working_dir", r.working_dir},
          {"user", r.user},
          {"uid", r.uid},
          {"userns_base", r.userns_base},
          {"gid", r.gid},
          {"limits", ToJson(r.limits)},
          {"scaling", ToJson(r.scaling)},
          {"version", r.version},
          {"deployed_at", r.deployed_at}};
}

Result<FunctionRecord> FunctionFromJson(const nlohmann::json& json) {
  try {
    FunctionRecord r;
    r.ip = json.at("ip").get<std::string>();
    r.rootfs = json.at("rootfs").get<std::string>();
    r.cmd = json.at("cmd").get<std::vector<std::string>>();
    r.env = json.value("env", std::vector<std::string>{});
    r.working_dir = json.value("working_dir", std::string());
    r.user = json.value("user", std::string());
    r.uid = json.value("uid", uint32_t{0});
    r.gid = json.value("gid", uint32_t{0});
    r.userns_base = json.value("userns_base", uint32_t{0});
    r.limits = LimitsFromJson(json.value("limits", nlohmann::json::object()), FunctionLimits{});
    r.scaling = ScalingFromJson(json.value("scaling", nlohmann::json::object()), ScalingOptions{});
    r.version = json.value("version", uint64_t{1});
    r.deployed_at = json.value("deployed_at", std::string());
    return r;
  } catch (const nlohmann::json::exception& e) {
    return MakeError(Errc::kInternal, std::string("bad function record: ") + e.what());
  }
}

const FunctionRecord* Registry::Find(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

nlohmann::json Registry::ToJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, record] : functions_) out[name] = store::ToJson(record);
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
  for (const auto& [name, value] : json.items()) {
    FAAS_RETURN_IF_ERROR_CTX(ValidateName(name), "registry " + path_);
    FAAS_ASSIGN_OR_RETURN(FunctionRecord record, FunctionFromJson(value));
    loaded.emplace(name, std::move(record));
  }
  functions_ = std::move(loaded);
  return Ok();
}

Status Registry::Save() const {
  return AtomicWriteFile(
      path_, ToJson().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", 0600,
      *ops_);
}

}  // namespace faas::store
