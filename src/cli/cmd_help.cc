// faas help [VERB]: the help of faas, or of one verb, on stdout.
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Prints the help of faas, or with VERB the help of that verb (the same as\n"
    "'faas VERB --help'), on stdout. An unknown VERB is a usage error.";

// What --help prints. App::help() would show the help of the verb chosen: this one.
std::string HelpOf(const CLI::App& app, const std::string& usage_name) {
  return app.get_formatter()->make_help(&app, usage_name, CLI::AppFormatMode::Normal);
}

int RunHelp(const CLI::App& app, const std::string& name) {
  if (name.empty()) {
    std::cout << HelpOf(app, app.get_name());
    return kExitOk;
  }
  for (const CLI::App* verb : app.get_subcommands({})) {
    if (verb->get_name() == name) {
      std::cout << HelpOf(*verb, app.get_name() + " " + name);
      return kExitOk;
    }
  }
  return UnknownCommand(app, name);
}

}  // namespace

Verb AddHelpCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("help", "Show the help of faas or of one verb");
  command->footer(kHelp);
  auto name = std::make_shared<std::string>();
  command->add_option("VERB", *name, "The verb to explain");
  return {command, [&app, name](const Client&) { return RunHelp(app, *name); }};
}

}  // namespace faas::cli
