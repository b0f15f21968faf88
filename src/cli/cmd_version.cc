// faas version: the version of faas, then that of the faasd it talks to.
#include <iostream>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"
#include "common/version.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Prints the version of faas ('faas VERSION'), then asks faasd for its own and prints\n"
    "'faasd VERSION (API N)'. When faasd cannot be reached, the first line is still printed,\n"
    "the error follows on stderr, and the exit status is 1. 'faas --version' prints the\n"
    "first line alone, without asking faasd.";

Result<std::string> ServerLine(const Client& client) {
  FAAS_ASSIGN_OR_RETURN(Response response, client.Get("/api/version"));
  FAAS_ASSIGN_OR_RETURN(nlohmann::ordered_json reply, ParseReply(response));
  FAAS_ASSIGN_OR_RETURN(std::string version, StringField(reply, "version"));
  const auto api = reply.find("api");
  if (api == reply.end() || !api->is_number_integer()) {
    return MakeError(Errc::kIo, "unexpected reply from faasd: no API version in " + reply.dump());
  }
  return "faasd " + EscapeControl(version) + " (API " + api->dump() + ")";
}

int RunVersion(const Client& client) {
  std::cout << "faas " << kVersion << "\n" << std::flush;
  Result<std::string> server = ServerLine(client);
  if (!server.ok()) return Fail(server.error());
  std::cout << *server << "\n";
  return kExitOk;
}

}  // namespace

Verb AddVersionCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("version", "Show the versions of faas and faasd");
  command->footer(kHelp);
  return {command, [](const Client& client) { return RunVersion(client); }};
}

}  // namespace faas::cli
