// faas rollback NAME [VERSION]: makes a kept version of a function serve again.
#include <charconv>
#include <iostream>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Makes version VERSION (e.g. 2 or v2) of the function NAME serve again, with the\n"
    "image and settings it was deployed with; without VERSION, the version that served\n"
    "before the serving one. The function keeps its IP address; requests already running\n"
    "finish on the version they started on, and the version that served is kept (see\n"
    "'faas versions NAME'). Prints \"✓ Rolled back NAME from vN to vM at IP\". Fails while a\n"
    "deploy of NAME is under way, and when faasd keeps no such version.";

int RunRollback(const Client& client, const std::string& name, const std::string& version_text) {
  if (int code = CheckName(name); code != kExitOk) return code;
  std::string path = "/api/functions/" + name + "/rollback";
  if (!version_text.empty()) {
    Result<uint64_t> version = ParseVersion(version_text);
    if (!version.ok()) return Fail(version.error(), kExitUsage);
    path += "?version=" + std::to_string(*version);
  }
  Result<Response> response = client.Post(path);
  if (!response.ok()) return Fail(response.error());
  Result<nlohmann::ordered_json> reply = ParseReply(*response);
  if (!reply.ok()) return Fail(reply.error());
  Result<std::string> ip = StringField(*reply, "ip");
  if (!ip.ok()) return Fail(ip.error());
  std::cout << "✓ Rolled back " << name << " from v" << reply->value("from_version", 0) << " to v"
            << reply->value("version", 0) << " at " << EscapeControl(*ip) << "\n";
  return kExitOk;
}

}  // namespace

Verb AddRollbackCommand(CLI::App& app) {
  CLI::App* command =
      app.add_subcommand("rollback", "Make an earlier version of a function serve again");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  auto version = std::make_shared<std::string>();
  command->add_option("NAME", *name, "Name of the function")->required();
  command->add_option("VERSION", *version,
                      "The version to serve, e.g. 2 (default: the one that served before)");
  return {command,
          [name, version](const Client& client) { return RunRollback(client, *name, *version); }};
}

}  // namespace faas::cli
