// faas rm NAME: removes a function.
#include <iostream>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Removes the function NAME from faasd, which stops it and releases its name and IP\n"
    "address, and deletes every version it kept. Prints \"✓ Removed NAME\". Fails with exit\n"
    "status 1 when faasd has no function of that name.";

Status Remove(const Client& client, const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Response response, client.Delete("/api/functions/" + name));
  FAAS_RETURN_IF_ERROR(ParseReply(response));
  return Ok();
}

int RunRm(const Client& client, const std::string& name) {
  if (int code = CheckName(name); code != kExitOk) return code;
  if (Status removed = Remove(client, name); !removed.ok()) return Fail(removed.error());
  std::cout << "✓ Removed " << name << "\n";
  return kExitOk;
}

}  // namespace

Verb AddRmCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("rm", "Remove a function");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  command->add_option("NAME", *name, "Name of the function")->required();
  return {command, [name](const Client& client) { return RunRm(client, *name); }};
}

}  // namespace faas::cli
