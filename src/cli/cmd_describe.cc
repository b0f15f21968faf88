// faas describe NAME: prints the function's record (address, command, limits) as JSON.
#include <iostream>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Prints everything faasd knows about the function NAME as JSON: its IP address, command,\n"
    "environment, user, resource limits and timeouts, version and deploy time. On a cluster\n"
    "node (faasd --cluster), \"version\" is the version the cluster serves, \"local_version\"\n"
    "this node's number for what it serves, and \"cluster\" holds the cluster's image\n"
    "reference and digest and, per node, the version it serves and whether it is ready.";

int RunDescribe(const Client& client, const std::string& name) {
  if (int code = CheckName(name); code != kExitOk) return code;
  Result<nlohmann::ordered_json> reply = ParseReply(client.Get("/api/functions/" + name));
  if (!reply.ok()) return Fail(reply.error());
  return PrintJson(*reply);
}

}  // namespace

Verb AddDescribeCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("describe", "Show a function's settings as JSON");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  command->add_option("NAME", *name, "Name of the function")->required();
  return {command, [name](const Client& client) { return RunDescribe(client, *name); }};
}

}  // namespace faas::cli
