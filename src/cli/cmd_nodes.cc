// faas nodes: the nodes of faasd's cluster, as the node asked last read them from etcd.
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
    "Lists the nodes of the cluster faasd belongs to (faasd --cluster), one row each:\n"
    "name, the address it advertises, its faasd release and its state. A node is listed\n"
    "while its lease in etcd lives: one that stopped leaves at once, one that died\n"
    "within faasd --node-ttl. The node asked marks itself '(this node)'; when it cannot\n"
    "reach etcd it says so on stderr, and the list is the last one it read. With --json,\n"
    "prints faasd's answer: {\"node\", \"etcd\", \"as_of\", \"nodes\": [{\"name\",\n"
    "\"address\", \"version\", \"self\"}]}. Fails (exit 1) when faasd runs alone.";

int RunNodes(const Client& client, bool json) {
  Result<nlohmann::ordered_json> reply = ParseReply(client.Get("/api/nodes"));
  if (!reply.ok()) return Fail(reply.error());
  if (json) return PrintJson(*reply);
  const std::string etcd = reply->value("etcd", std::string());
  if (etcd != "ok") {
    std::cerr << "Warning: " << EscapeControl(reply->value("node", std::string()))
              << " cannot reach etcd (" << EscapeControl(etcd) << "); nodes as of "
              << EscapeControl(reply->value("as_of", std::string("never"))) << "\n";
  }
  std::vector<std::vector<std::string>> rows = {{"Name", "Address", "Version", "State"}};
  const nlohmann::ordered_json nodes = reply->value("nodes", nlohmann::ordered_json::array());
  for (const auto& node : nodes) {
    if (!node.is_object()) continue;
    const bool self = node.value("self", false);
    std::string address = node.value("address", std::string());
    rows.push_back({node.value("name", std::string()), address.empty() ? "-" : address,
                    node.value("version", std::string()), self ? "up (this node)" : "up"});
  }
  PrintTable(rows);
  return kExitOk;
}

}  // namespace

Verb AddNodesCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("nodes", "List the nodes of faasd's cluster");
  command->footer(kHelp);
  auto json = std::make_shared<bool>(false);
  command->add_flag("--json", *json, "Print faasd's answer as JSON instead of a table");
  return {command, [json](const Client& client) { return RunNodes(client, *json); }};
}

}  // namespace faas::cli
