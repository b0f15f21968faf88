// The verbs of the faas CLI, one file each. A verb registers its subcommand on the app before
// parsing and hands back how to run it; main() runs the one that was chosen.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cli/client.h"
#include "common/error.h"

namespace faas::cli {

// Process exit codes, part of the CLI contract.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // faasd refused, or could not be reached
inline constexpr int kExitUsage = 2;    // bad arguments or input, caught before any request

struct Verb {
  CLI::App* command = nullptr;  // owned by the app; parsed() says whether it was chosen
  // Runs the verb with its parsed arguments; prints its result and returns the exit code.
  std::function<int(const Client& client)> run;
};

Verb AddNewCommand(CLI::App& app);
Verb AddIpCommand(CLI::App& app);
Verb AddListCommand(CLI::App& app);
Verb AddRmCommand(CLI::App& app);
Verb AddInitCommand(CLI::App& app);  // needs no daemon: ignores the Client
Verb AddDescribeCommand(CLI::App& app);
Verb AddVersionsCommand(CLI::App& app);
Verb AddRollbackCommand(CLI::App& app);
Verb AddPushCommand(CLI::App& app);
Verb AddNodesCommand(CLI::App& app);
Verb AddVersionCommand(CLI::App& app);
Verb AddInvokeCommand(CLI::App& app);
Verb AddLogsCommand(CLI::App& app);
Verb AddHelpCommand(CLI::App& app);  // keeps a reference to `app`, for its verbs

// Prints "Error: <message>" on stderr, control characters escaped (EscapeControl), and
// returns `exit_code`.
int Fail(const Error& error, int exit_code = kExitFailure);

// Fail() with kExitUsage when `name` is not a valid function name; kExitOk otherwise.
int CheckName(const std::string& name);

// Prints faasd's answer as indented JSON (control characters escaped); kExitOk.
int PrintJson(const nlohmann::ordered_json& reply);

// Prints `rows` (the header first) as columns two spaces apart, control characters
// escaped.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// A version as users write it: "2" or "v2"; kInvalidArgument otherwise.
Result<uint64_t> ParseVersion(std::string text);

// "Commands: new, ip, ...", the verbs registered on `app` in their order, and where to read
// more; two lines.
std::string CommandList(const CLI::App& app);

// Prints 'Error: unknown command "NAME"' and CommandList on stderr; returns kExitUsage.
int UnknownCommand(const CLI::App& app, const std::string& name);

// Where a function answers: its IP address and faasd's port for functions.
struct FunctionAddress {
  std::string ip;
  int port = 80;
};

// Asks faasd for the address of the function `name` (GET /api/ip/NAME).
Result<FunctionAddress> LookUpAddress(const Client& client, const std::string& name);

}  // namespace faas::cli
