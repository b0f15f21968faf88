// faas ip NAME: prints the function's IP address alone on one line.
#include <iostream>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Prints the IP address of the function NAME, alone on one line, so scripts can use it\n"
    "directly, e.g. curl http://$(faas ip hello)/. Fails with exit status 1 when faasd\n"
    "has no function of that name.";

int RunIp(const Client& client, const std::string& name) {
  if (int code = CheckName(name); code != kExitOk) return code;
  Result<FunctionAddress> address = LookUpAddress(client, name);
  if (!address.ok()) return Fail(address.error());
  std::cout << EscapeControl(address->ip) << "\n";
  return kExitOk;
}

}  // namespace

// The port is 80 when the answer does not name one (a faasd older than the "port" field).
Result<FunctionAddress> LookUpAddress(const Client& client, const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Response response, client.Get("/api/ip/" + name));
  FAAS_ASSIGN_OR_RETURN(nlohmann::ordered_json reply, ParseReply(response));
  FunctionAddress address;
  FAAS_ASSIGN_OR_RETURN(address.ip, StringField(reply, "ip"));
  const auto port = reply.find("port");
  if (port != reply.end() && port->is_number_integer()) address.port = port->get<int>();
  return address;
}

Verb AddIpCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("ip", "Print the IP address of a function");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  command->add_option("NAME", *name, "Name of the function")->required();
  return {command, [name](const Client& client) { return RunIp(client, *name); }};
}

}  // namespace faas::cli
