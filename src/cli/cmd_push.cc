// faas push NAME REF [--version N]: uploads a deployed version's image to a registry.
#include <iostream>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"
#include "pull/http.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Pushes the serving version of the function NAME (or version N) to the registry\n"
    "reference REF, a tag: registry.example.com/team/fn:1.4. faasd uploads the version as\n"
    "it keeps it: its tree as one gzip layer (owners as in the image), a config with its\n"
    "command and the image's Env, WorkingDir and User (not the settings of 'faas new'),\n"
    "and an OCI manifest. The same version always gives the same digests: a blob the\n"
    "repository has is not sent again, and one that another repository of the registry\n"
    "has (where the version came from or was pushed before) is mounted from there.\n"
    "faasd's registry credentials are used (faasd --registry-auth). A version deployed\n"
    "from an archive records REF and the digest, so that 'faas new NAME --image REF'\n"
    "keeps serving it. Prints \"✓ Pushed NAME vN to REF (DIGEST)\" and the layer's digest,\n"
    "size and whether it was uploaded, already there or mounted; --json prints faasd's\n"
    "answer: {\"name\", \"version\", \"image\", \"manifest_digest\", \"config_digest\",\n"
    "\"layer\": {\"digest\", \"size\", \"outcome\", \"written\"}, \"blobs\": {\"uploaded\", "
    "\"existed\",\n"
    "\"mounted\"}}. Fails while a deploy of NAME is under way.";

int RunPush(const Client& client, const std::string& name, const std::string& ref,
            const std::string& version_text, bool json) {
  if (int code = CheckName(name); code != kExitOk) return code;
  std::string path = "/api/functions/" + name + "/push?image=" + pull::UrlEncode(ref);
  if (!version_text.empty()) {
    Result<uint64_t> version = ParseVersion(version_text);
    if (!version.ok()) return Fail(version.error(), kExitUsage);
    path += "&version=" + std::to_string(*version);
  }
  Result<nlohmann::ordered_json> reply = ParseReply(client.Post(path));
  if (!reply.ok()) return Fail(reply.error());
  if (json) return PrintJson(*reply);
  Result<std::string> image = StringField(*reply, "image");
  if (!image.ok()) return Fail(image.error());
  Result<std::string> digest = StringField(*reply, "manifest_digest");
  if (!digest.ok()) return Fail(digest.error());
  const nlohmann::ordered_json layer = reply->value("layer", nlohmann::ordered_json::object());
  std::cout << "✓ Pushed " << name << " v" << reply->value("version", 0) << " to "
            << EscapeControl(*image) << " (" << EscapeControl(*digest) << ")\n"
            << "  Layer: " << EscapeControl(layer.value("digest", "")) << " ("
            << layer.value("size", uint64_t{0}) << " bytes, "
            << EscapeControl(layer.value("outcome", "")) << ")\n";
  return kExitOk;
}

}  // namespace

Verb AddPushCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("push", "Push a function's image to a registry");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  auto ref = std::make_shared<std::string>();
  auto version = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  command->add_option("NAME", *name, "Name of the function")->required();
  command->add_option("REF", *ref, "Where to push: registry/repository:tag")->required();
  command->add_option("--version", *version,
                      "The version to push, e.g. 2 (default: the serving one)");
  command->add_flag("--json", *json, "Print faasd's answer as JSON");
  return {command, [name, ref, version, json](const Client& client) {
            return RunPush(client, *name, *ref, *version, *json);
          }};
}

}  // namespace faas::cli
