// faas list: a table of the deployed functions (--wide: with version, status and deploy time), or
// with --json the registry as faasd returned it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Lists the functions faasd runs, one row per function sorted by name, with columns Name,\n"
    "IP and Command (the function's command, joined by spaces; control characters show as\n"
    "\\xNN). With --json, prints faasd's registry instead: a JSON object mapping each name to\n"
    "its record, as the API returned it. With --wide, three more columns follow: Version\n"
    "(vN), Status and Deployed (the deploy time, UTC). Status is paused (the listener is\n"
    "paused: accept failed for want of fds or memory), serving (requests running), warm\n"
    "(containers ready ahead), starting (containers starting ahead) or idle (no container).\n"
    "On a cluster node (faasd --cluster) the list is the cluster's: Version is the version\n"
    "the cluster serves, and --wide adds a last column, Nodes: per node the version it\n"
    "serves, e.g. \"n1:v3 n2:v3 n3:v2 (not ready)\" while n3 converges.\n"
    "The default table keeps its three columns, for scripts.";

constexpr size_t kMinNameWidth = 20;
constexpr size_t kIpWidth = 15;
constexpr size_t kVersionWidth = 7;
constexpr size_t kStatusWidth = 8;
constexpr size_t kDeployedWidth = 20;  // an RFC 3339 time in UTC, to the second

struct Row {
  std::string name;
  std::string ip;
  std::string command;
  // --wide only.
  std::string key;  // the name unescaped, as faasd knows it
  std::string version;
  std::string status;
  std::string deployed;
  std::string nodes;  // on a cluster node
};

std::string Text(const nlohmann::ordered_json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string JoinCommand(const nlohmann::ordered_json& cmd) {
  if (!cmd.is_array()) return cmd.is_null() ? "" : Text(cmd);
  std::string joined;
  for (const auto& arg : cmd) joined += (joined.empty() ? "" : " ") + Text(arg);
  return joined;
}

// "n1:v3 n2:v3 n3:v2 (not ready)": what each node reported of the function.
std::string NodesOf(const nlohmann::ordered_json& record) {
  const auto cluster = record.find("cluster");
  if (cluster == record.end() || !cluster->is_object()) return "";
  const auto nodes = cluster->find("nodes");
  if (nodes == cluster->end() || !nodes->is_object()) return "";
  std::string out;
  for (const auto& [node, report] : nodes->items()) {
    if (!report.is_object()) continue;
    std::string entry = node + ":v" + Text(report.value("version", nlohmann::ordered_json(0)));
    if (!report.value("ready", false)) entry += " (not ready)";
    out += (out.empty() ? "" : " ") + entry;
  }
  return EscapeControl(out);
}

// Every field is escaped: an image chose the command, and the registry is faasd's to fill.
Row ToRow(const std::string& name, const nlohmann::ordered_json& record) {
  if (!record.is_object()) {
    Row row;
    row.name = EscapeControl(name);
    row.key = name;
    return row;
  }
  const auto field = [&record](const char* key) {
    return EscapeControl(Text(record.value(key, nlohmann::ordered_json(""))));
  };
  return {.name = EscapeControl(name),
          .ip = field("ip"),
          .command = EscapeControl(JoinCommand(record.value("cmd", nlohmann::ordered_json()))),
          .key = name,
          .version = "v" + field("version"),
          .status = "",
          .deployed = field("deployed_at"),
          .nodes = NodesOf(record)};
}

int64_t Count(const nlohmann::ordered_json& runtime, const char* key) {
  const auto it = runtime.find(key);
  return it != runtime.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

// One word for the live state in the "runtime" object of GET /api/functions/NAME.
std::string StatusOf(const nlohmann::ordered_json& runtime) {
  if (!runtime.is_object()) return "-";
  const auto paused = runtime.find("listener_paused");
  if (paused != runtime.end() && paused->is_boolean() && paused->get<bool>()) return "paused";
  if (Count(runtime, "active") > 0) return "serving";
  if (Count(runtime, "pool_ready") > 0) return "warm";
  if (Count(runtime, "pool_starting") > 0) return "starting";
  return "idle";
}

// The status of each row, one request per function; "-" for one removed meanwhile.
Status FillStatus(const Client& client, std::vector<Row>& rows) {
  for (Row& row : rows) {
    FAAS_ASSIGN_OR_RETURN(Response response, client.Get("/api/functions/" + row.key));
    if (response.status == 404) {
      row.status = "-";
      continue;
    }
    FAAS_ASSIGN_OR_RETURN(nlohmann::ordered_json described, ParseReply(response));
    row.status = StatusOf(described.value("runtime", nlohmann::ordered_json()));
  }
  return Ok();
}

Result<std::vector<Row>> ToRows(const nlohmann::ordered_json& registry) {
  if (!registry.is_object()) {
    return MakeError(Errc::kIo, "unexpected reply from faasd: the registry is not an object");
  }
  std::vector<Row> rows;
  for (const auto& [name, record] : registry.items()) rows.push_back(ToRow(name, record));
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.name < b.name; });
  return rows;
}

std::string Pad(const std::string& text, size_t width) {
  return text + std::string(width > text.size() ? width - text.size() : 0, ' ');
}

void PrintRow(const Row& row, size_t name_width) {
  std::string line = Pad(row.name, name_width) + " " + Pad(row.ip, kIpWidth) + " " + row.command;
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::cout << line << "\n";
}

void PrintWideRow(const Row& row, size_t name_width, size_t command_width, bool cluster) {
  std::string line = Pad(row.name, name_width) + " " + Pad(row.ip, kIpWidth) + " " +
                     Pad(row.command, command_width) + " " + Pad(row.version, kVersionWidth) + " " +
                     Pad(row.status, kStatusWidth) + " " +
                     (cluster ? Pad(row.deployed, kDeployedWidth) + " " + row.nodes : row.deployed);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::cout << line << "\n";
}

void PrintTable(const std::vector<Row>& rows, bool wide) {
  size_t name_width = kMinNameWidth;
  size_t command_width = std::string_view("Command").size();
  for (const Row& row : rows) {
    name_width = std::max(name_width, row.name.size());
    command_width = std::max(command_width, row.command.size());
  }
  const Row header{.name = "Name",
                   .ip = "IP",
                   .command = "Command",
                   .key = "",
                   .version = "Version",
                   .status = "Status",
                   .deployed = "Deployed",
                   .nodes = "Nodes"};
  if (!wide) {
    PrintRow(header, name_width);
    for (const Row& row : rows) PrintRow(row, name_width);
    return;
  }
  const bool cluster =
      std::any_of(rows.begin(), rows.end(), [](const Row& row) { return !row.nodes.empty(); });
  PrintWideRow(header, name_width, command_width, cluster);
  for (const Row& row : rows) PrintWideRow(row, name_width, command_width, cluster);
}

int RunList(const Client& client, bool json, bool wide) {
  Result<Response> response = client.Get("/api/list");
  if (!response.ok()) return Fail(response.error());
  Result<nlohmann::ordered_json> registry = ParseReply(*response);
  if (!registry.ok()) return Fail(registry.error());
  if (json) {
    std::cout << EscapeJsonControl(registry->dump(2)) << "\n";
    return kExitOk;
  }
  Result<std::vector<Row>> rows = ToRows(*registry);
  if (!rows.ok()) return Fail(rows.error());
  if (wide) {
    if (Status filled = FillStatus(client, *rows); !filled.ok()) {
      return Fail(filled.error());
    }
  }
  PrintTable(*rows, wide);
  return kExitOk;
}

}  // namespace

Verb AddListCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("list", "List the deployed functions");
  command->footer(kHelp);
  auto json = std::make_shared<bool>(false);
  auto wide = std::make_shared<bool>(false);
  CLI::Option* json_flag =
      command->add_flag("--json", *json, "Print faasd's registry as JSON instead of a table");
  command->add_flag("--wide", *wide, "Add the columns Version, Status and Deployed")
      ->excludes(json_flag);
  return {command, [json, wide](const Client& client) { return RunList(client, *json, *wide); }};
}

}  // namespace faas::cli
