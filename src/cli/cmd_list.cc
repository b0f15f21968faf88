// faas list: a table of the deployed functions, or with --json the registry as faasd returned it.
#include <algorithm>
#include <cstddef>
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
    "Lists the functions faasd runs, one row per function sorted by name, with columns Name,\n"
    "IP and Command (the function's command, joined by spaces; control characters show as\n"
    "\\xNN). With --json, prints faasd's registry instead: a JSON object mapping each name to\n"
    "its record, as the API returned it.";

constexpr size_t kMinNameWidth = 20;
constexpr size_t kIpWidth = 15;

struct Row {
  std::string name;
  std::string ip;
  std::string command;
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

// Every field is escaped: an image chose the command, and the registry is faasd's to fill.
Row ToRow(const std::string& name, const nlohmann::ordered_json& record) {
  if (!record.is_object()) return {EscapeControl(name), "", ""};
  return {EscapeControl(name), EscapeControl(Text(record.value("ip", nlohmann::ordered_json("")))),
          EscapeControl(JoinCommand(record.value("cmd", nlohmann::ordered_json())))};
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

void PrintTable(const std::vector<Row>& rows) {
  size_t name_width = kMinNameWidth;
  for (const Row& row : rows) name_width = std::max(name_width, row.name.size());
  PrintRow({"Name", "IP", "Command"}, name_width);
  for (const Row& row : rows) PrintRow(row, name_width);
}

int RunList(const Client& client, bool json) {
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
  PrintTable(*rows);
  return kExitOk;
}

}  // namespace

Verb AddListCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("list", "List the deployed functions");
  command->footer(kHelp);
  auto json = std::make_shared<bool>(false);
  command->add_flag("--json", *json, "Print faasd's registry as JSON instead of a table");
  return {command, [json](const Client& client) { return RunList(client, *json); }};
}

}  // namespace faas::cli
