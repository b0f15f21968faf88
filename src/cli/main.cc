// faas: the command-line client of faasd. Parses the global flags and the verb, finds the daemon,
// and runs the verb. Exit codes are in cli/commands.h.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/text.h"
#include "common/version.h"
#include "store/names.h"

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
    "Run 'faas help VERB' (or 'faas VERB --help') for the details of a verb.";

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

// The verb given on a command line that failed to parse, or nullptr for none.
const CLI::App* ChosenVerb(const CLI::App& app) {
  const std::vector<const CLI::App*> chosen = app.get_subcommands({});
  for (const CLI::App* verb : chosen) {
    if (verb->parsed()) return verb;
  }
  return nullptr;
}

// CLI11's own parse errors as usage errors: "Error: ..." and exit 2, like every other.
int ParseFailed(const CLI::App& app, const CLI::ParseError& e) {
  const CLI::App* verb = ChosenVerb(app);
  const std::vector<std::string> extras = app.remaining();
  if (verb == nullptr && dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr && !extras.empty() &&
      !extras.front().starts_with('-')) {
    return UnknownCommand(app, extras.front());
  }
  std::cerr << "Error: " << EscapeControl(e.what()) << "\n"
            << "Run 'faas " << (verb != nullptr ? verb->get_name() + " " : "")
            << "--help' for usage.\n";
  return kExitUsage;
}

int Main(int argc, char** argv) {
  CLI::App app(kDescription, "faas");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("faas ") + kVersion);
  app.require_subcommand(0, 1);
  app.fallthrough();  // global flags work after the verb too; subcommands inherit this
  GlobalFlags flags;
  AddGlobalFlags(app, flags);
  const std::vector<Verb> verbs = {
      AddNewCommand(app),      AddIpCommand(app),       AddListCommand(app),
      AddRmCommand(app),       AddDescribeCommand(app), AddVersionsCommand(app),
      AddRollbackCommand(app), AddInitCommand(app),     AddVersionCommand(app),
      AddInvokeCommand(app),   AddLogsCommand(app),     AddPushCommand(app),
      AddNodesCommand(app),    AddHelpCommand(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help and --version
    return ParseFailed(app, e);
  }
  const Client client(ResolveEndpoint(flags));
  for (const Verb& verb : verbs) {
    if (verb.command->parsed()) return verb.run(client);
  }
  std::cerr << "Error: no command given\n" << CommandList(app);
  return kExitUsage;
}

}  // namespace

std::string CommandList(const CLI::App& app) {
  std::string names;
  for (const CLI::App* verb : app.get_subcommands({})) {
    names += (names.empty() ? "" : ", ") + verb->get_name();
  }
  return "Commands: " + names + "\nRun 'faas help' for usage.\n";
}

int UnknownCommand(const CLI::App& app, const std::string& name) {
  std::cerr << "Error: unknown command \"" << EscapeControl(name) << "\"\n" << CommandList(app);
  return kExitUsage;
}

int Fail(const Error& error, int exit_code) {
  std::cerr << "Error: " << EscapeControl(error.message) << "\n";
  return exit_code;
}

int CheckName(const std::string& name) {
  Status valid = store::ValidateName(name);
  return valid.ok() ? kExitOk : Fail(valid.error(), kExitUsage);
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i)
      line += row[i] + std::string(i + 1 < row.size() ? widths[i] - row[i].size() + 2 : 0, ' ');
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << EscapeControl(line) << "\n";
  }
}

int PrintJson(const nlohmann::ordered_json& reply) {
  std::cout << EscapeJsonControl(reply.dump(2)) << "\n";
  return kExitOk;
}

Result<uint64_t> ParseVersion(std::string text) {
  if (!text.empty() && text[0] == 'v') text.erase(0, 1);
  uint64_t version = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (ec != std::errc() || end != text.data() + text.size() || version == 0)
    return MakeError(Errc::kInvalidArgument,
                     "invalid version '" + text + "': expected a number like 2 or v2");
  return version;
}

}  // namespace faas::cli

int main(int argc, char** argv) {
  try {
    return faas::cli::Main(argc, argv);
  } catch (const std::exception& e) {
    return faas::cli::Fail(faas::MakeError(faas::Errc::kInternal, e.what()));
  }
}
