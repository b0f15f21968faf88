#include "image/config.h"

#include "common/text.h"
#include "image/archive_util.h"

namespace faas::image {
namespace {

using nlohmann::json;

Error BadField(const std::string& field, const char* expected) {
  return MakeError(Errc::kBadImage, "image config: " + field + ": expected " + expected);
}

// A missing or null member reads as absent; anything else must have the right type.
const json* Member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

Status ReadStringList(const json& object, const char* key, const std::string& field,
                      std::vector<std::string>* out) {
  const json* value = Member(object, key);
  if (value == nullptr) return Ok();
  if (!value->is_array()) return BadField(field, "an array of strings");
  for (const json& item : *value) {
    if (!item.is_string()) return BadField(field, "an array of strings");
    out->push_back(item.get<std::string>());
  }
  return Ok();
}

Status ReadString(const json& object, const char* key, const std::string& field, std::string* out) {
  const json* value = Member(object, key);
  if (value == nullptr) return Ok();
  if (!value->is_string()) return BadField(field, "a string");
  *out = value->get<std::string>();
  return Ok();
}

Status ReadRunConfig(const json& doc, ImageConfig* out) {
  const json* config = Member(doc, "config");
  if (config == nullptr) return Ok();
  if (!config->is_object()) return BadField("config", "an object");
  FAAS_RETURN_IF_ERROR(ReadStringList(*config, "Entrypoint", "config.Entrypoint", &out->cmd));
  FAAS_RETURN_IF_ERROR(ReadStringList(*config, "Cmd", "config.Cmd", &out->cmd));
  FAAS_RETURN_IF_ERROR(ReadStringList(*config, "Env", "config.Env", &out->env));
  for (const std::string& entry : out->env) {
    if (Status valid = ValidateEnvEntry(entry); !valid.ok())
      return MakeError(Errc::kBadImage, "image config: config.Env: " + valid.error().message);
  }
  FAAS_RETURN_IF_ERROR(ReadString(*config, "WorkingDir", "config.WorkingDir", &out->working_dir));
  return ReadString(*config, "User", "config.User", &out->user);
}

Status ReadDiffIds(const json& doc, std::vector<std::string>* out) {
  const json* rootfs = Member(doc, "rootfs");
  if (rootfs == nullptr) return Ok();
  if (!rootfs->is_object()) return BadField("rootfs", "an object");
  FAAS_RETURN_IF_ERROR(ReadStringList(*rootfs, "diff_ids", "rootfs.diff_ids", out));
  for (const std::string& id : *out) {
    FAAS_RETURN_IF_ERROR_CTX(Sha256HexOfDigest(id), "image config: rootfs.diff_ids");
  }
  return Ok();
}

}  // namespace

Result<ParsedConfig> ParseImageConfig(std::string_view text) {
  FAAS_ASSIGN_OR_RETURN(json doc, ParseJson(text, "image config"));
  if (!doc.is_object()) return BadField("document", "an object");
  ParsedConfig parsed;
  // The accessors above check types first, so nothing below throws for bad input;
  // the catch is the module edge for anything unforeseen.
  try {
    FAAS_RETURN_IF_ERROR(ReadRunConfig(doc, &parsed.config));
    FAAS_RETURN_IF_ERROR(ReadDiffIds(doc, &parsed.diff_ids));
  } catch (const json::exception& e) {
    return MakeError(Errc::kBadImage, std::string("image config: ") + e.what());
  }
  if (parsed.config.cmd.empty()) parsed.config.cmd = {"/bin/sh"};
  return parsed;
}

}  // namespace faas::image
