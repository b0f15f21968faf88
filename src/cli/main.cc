// faas: the command-line client of faasd. Parses the global flags and the verb, finds the daemon,
// and runs the verb. Exit codes are in cli/commands.h.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/text.h"
#include "store/names.h"

#ifndef FAAS_VERSION
#define FAAS_VERSION "0.1.0"
#endif

namespace faas::cli {
namespace {

constexpr char kDefaultSocket[] = "/run/faasd/faasd.sock";

constexpr char kDescription[] =
    "faas deploys and manages functions on faasd, a single-node FaaS platform. A function is\n"
    "a container image deployed under a name; faasd gives it its own IP address and runs its\n"
    "command. faas talks to faasd's control API over faasd's unix socket (default\n"
    "/run/faasd/faasd.sock), or over TCP with --url.\n";

constexpr char kFooter[] =
    "Environment: FAAS_SOCKET, FAAS_URL and FAAS_TOKEN stand in for --socket, --url and --token;\n"
    "flags win over the environment.\n"
    "Exit status: 0 success; 1 faasd refused or could not be reached; 2 usage error.\n"
    "Run 'faas VERB --help' for the details of a verb.";

struct GlobalFlags {
  std::string socket;
  std::string url;
  std::string token;
};

void AddGlobalFlags(CLI::App& app, GlobalFlags& flags) {
  CLI::Option* socket = app.add_option(
      "--socket", flags.socket,
      "Path of faasd's unix socket (env FAAS_SOCKET; default /run/faasd/faasd.sock)");
  CLI::Option* url =
      app.add_option("--url", flags.url,
                     "Reach faasd over TCP instead, e.g. http://127.0.0.1:8080 (env FAAS_URL)");
  socket->excludes(url);
  app.add_option("--token", flags.token,
                 "Bearer token for faasd's API (env FAAS_TOKEN, which keeps it out of ps)")
      ->envname("FAAS_TOKEN");
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// Flags win over the environment. --socket and --url exclude each other; with both FAAS_SOCKET
// and FAAS_URL set, the socket wins.
Endpoint ResolveEndpoint(const GlobalFlags& flags) {
  Endpoint endpoint;
  endpoint.token = flags.token;
  if (!flags.socket.empty()) {
    endpoint.socket_path = flags.socket;
  } else if (!flags.url.empty()) {
    endpoint.url = flags.url;
  } else if (!Env("FAAS_SOCKET").empty()) {
    endpoint.socket_path = Env("FAAS_SOCKET");
  } else if (!Env("FAAS_URL").empty()) {
    endpoint.url = Env("FAAS_URL");
  } else {
    endpoint.socket_path = kDefaultSocket;
  }
  return endpoint;
}

int Main(int argc, char** argv) {
  CLI::App app(kDescription, "faas");
  app.footer(kFooter);
  app.set_version_flag("--version", "faas " FAAS_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();  // global flags work after the verb too; subcommands inherit this
  GlobalFlags flags;
  AddGlobalFlags(app, flags);
  const std::vector<Verb> verbs = {AddNewCommand(app),      AddIpCommand(app),
                                   AddListCommand(app),     AddRmCommand(app),
                                   AddDescribeCommand(app), AddVersionsCommand(app),
                                   AddRollbackCommand(app), AddInitCommand(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;  // --help and --version exit 0
  }
  const Client client(ResolveEndpoint(flags));
  for (const Verb& verb : verbs) {
    if (verb.command->parsed()) return verb.run(client);
  }
  std::cerr << app.help();  // no verb given
  return kExitUsage;
}

}  // namespace

int Fail(const Error& error, int exit_code) {
  std::cerr << "Error: " << EscapeControl(error.message) << "\n";
  return exit_code;
}

int CheckName(const std::string& name) {
  Status valid = store::ValidateName(name);
  return valid.ok() ? kExitOk : Fail(valid.error(), kExitUsage);
}

}  // namespace faas::cli

int main(int argc, char** argv) {
  try {
    return faas::cli::Main(argc, argv);
  } catch (const std::exception& e) {
    return faas::cli::Fail(faas::MakeError(faas::Errc::kInternal, e.what()));
  }
}
