// faas versions NAME: the kept versions of a function, the serving one first.
#include <algorithm>
#include <cstddef>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Lists the versions faasd keeps of the function NAME (faasd --keep-versions, the serving\n"
    "one included), one row each: the version, whether it serves, its image ID (the sha256\n"
    "of the image's config, as 'podman images' shows it), when it was deployed and the\n"
    "settings it was deployed with (the options of 'faas new', given or kept from the\n"
    "version before; 'defaults' when none). The serving version comes first, then the\n"
    "others from the one that served most recently: 'faas rollback NAME' goes back to the\n"
    "second row. Versions pulled with 'faas new --image' add a last column: the reference\n"
    "and the manifest digest it resolved to. With --json, prints faasd's answer instead: "
    "{\"name\", \"serving\",\n"
    "\"versions\": [{\"version\", \"serving\", \"image_digest\", \"deployed_at\", \"options\",\n"
    "\"limits\", \"scaling\", \"cmd\", \"env\", \"image_ref\", \"manifest_digest\", ...}]}.";

constexpr size_t kShortDigestHex = 12;

std::string Text(const nlohmann::ordered_json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

// "sha256:0123456789ab", or "-" when faasd did not record it.
std::string ShortDigest(const std::string& digest) {
  if (digest.empty()) return "-";
  const size_t colon = digest.find(':');
  return digest.substr(0, colon == std::string::npos ? 0 : colon + 1 + kShortDigestHex);
}

// The image ID of a version.
std::string ShortImage(const nlohmann::ordered_json& version) {
  return ShortDigest(Text(version.value("image_digest", nlohmann::ordered_json(""))));
}

// "env (2), memory=256M, warm=2": the options as `faas new` takes them.
std::string Settings(const nlohmann::ordered_json& options) {
  std::string out;
  if (!options.is_object()) return "-";
  for (const auto& [key, value] : options.items()) {
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    std::string setting = value.is_array() ? flag + " (" + std::to_string(value.size()) + ")"
                                           : flag + "=" + Text(value);
    out += (out.empty() ? "" : ", ") + setting;
  }
  return out.empty() ? "defaults" : out;
}

std::vector<std::string> ToRow(const nlohmann::ordered_json& version) {
  if (!version.is_object()) return {"?", "", "", "", ""};
  return {"v" + Text(version.value("version", nlohmann::ordered_json("?"))),
          version.value("serving", false) ? "yes" : "", ShortImage(version),
          Text(version.value("deployed_at", nlohmann::ordered_json(""))),
          Settings(version.value("options", nlohmann::ordered_json::object()))};
}

// "127.0.0.1:5000/hello:1@sha256:0123456789ab" for a pulled version, "-" otherwise.
std::string Pulled(const nlohmann::ordered_json& version) {
  if (!version.is_object() || !version.contains("image_ref")) return "-";
  return Text(version["image_ref"]) + "@" +
         ShortDigest(Text(version.value("manifest_digest", nlohmann::ordered_json(""))));
}

int RunVersions(const Client& client, const std::string& name, bool json) {
  if (int code = CheckName(name); code != kExitOk) return code;
  Result<nlohmann::ordered_json> reply =
      ParseReply(client.Get("/api/functions/" + name + "/versions"));
  if (!reply.ok()) return Fail(reply.error());
  if (json) return PrintJson(*reply);
  const nlohmann::ordered_json versions = reply->value("versions", nlohmann::ordered_json());
  if (!versions.is_array())
    return Fail(MakeError(Errc::kIo, "unexpected reply from faasd: no list of versions"));
  std::vector<std::vector<std::string>> rows = {
      {"Version", "Serving", "Image", "Deployed at", "Settings"}};
  bool pulled = false;
  for (const auto& version : versions) {
    rows.push_back(ToRow(version));
    pulled = pulled || (version.is_object() && version.contains("image_ref"));
  }
  // The column exists only where it says something: archive deploys keep their table.
  if (pulled) {
    rows[0].push_back("Pulled from");
    for (size_t i = 0; i < versions.size(); ++i) rows[i + 1].push_back(Pulled(versions[i]));
  }
  PrintTable(rows);
  return kExitOk;
}

}  // namespace

Verb AddVersionsCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("versions", "List the kept versions of a function");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  command->add_option("NAME", *name, "Name of the function")->required();
  command->add_flag("--json", *json, "Print faasd's answer as JSON instead of a table");
  return {command,
          [name, json](const Client& client) { return RunVersions(client, *name, *json); }};
}

}  // namespace faas::cli
