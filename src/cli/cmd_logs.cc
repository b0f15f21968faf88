// faas logs NAME: a function's output and requests, as faasd keeps them.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/text.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Prints what the function NAME's containers wrote on stdout and stderr, and one line per\n"
    "request, oldest first, as faasd keeps them (faasd --log-size per function):\n"
    "  TIME vVERSION CONTAINER STREAM | LINE\n"
    "  TIME vVERSION CONTAINER request CLIENT START queued N ms [exit N] N ms [answered N] "
    "OUTCOME\n"
    "TIME is UTC with milliseconds; a line cut at 16 KiB ends with \" [cut]\"; control bytes are\n"
    "shown as \\xNN; \"-\" stands for what a request answered by faasd alone lacks. --json\n"
    "prints the records as stored, one JSON object per line. With -f it keeps printing new\n"
    "lines until Ctrl-C, or until the function is removed or faasd stops.";

struct LogsArgs {
  std::string name;
  bool follow = false;
  bool json = false;
  std::string since;
  int64_t tail = -1;  // -1: every line
  std::string stream;
};

std::string QueryEscape(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string LogsPath(const LogsArgs& args) {
  std::string query;
  const auto add = [&](const char* key, const std::string& value) {
    query += (query.empty() ? "?" : "&") + std::string(key) + "=" + QueryEscape(value);
  };
  if (!args.since.empty()) add("since", args.since);
  if (args.tail >= 0) add("tail", std::to_string(args.tail));
  if (!args.stream.empty()) add("stream", args.stream);
  if (args.follow) add("follow", "1");
  return "/api/functions/" + args.name + "/logs" + query;
}

std::string Field(const nlohmann::json& record, const char* key) {
  auto it = record.find(key);
  if (it == record.end() || it->is_null()) return "-";
  if (it->is_string()) return EscapeControl(it->get<std::string>());
  return it->dump();
}

std::string FormatRequest(const nlohmann::json& r) {
  std::string out = "request " + Field(r, "client") + " " + Field(r, "start") + " queued " +
                    Field(r, "queue_ms") + " ms";
  if (r.contains("exit_status")) out += " exit " + Field(r, "exit_status");
  out += " " + Field(r, "duration_ms") + " ms";
  if (r.contains("answered")) out += " answered " + Field(r, "answered");
  return out + " " + Field(r, "outcome");
}

// One record as a line for people; a line that is not a record is shown escaped.
std::string FormatRecord(std::string_view line) {
  const auto r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!r.is_object()) return EscapeControl(line);
  const uint64_t version = r.value("version", uint64_t{0});
  std::string out = Field(r, "time") + " " + (version ? "v" + std::to_string(version) : "-") + " " +
                    (r.value("container", "").empty() ? "-" : Field(r, "container")) + " ";
  const std::string stream = r.value("stream", "");
  if (stream == "request") return out + FormatRequest(r);
  out += EscapeControl(stream) + " | " + Field(r, "line");
  if (r.value("cut", false)) out += " [cut]";
  return out;
}

// Prints each whole line of the body as it arrives; a line split across parts waits.
class Printer {
 public:
  explicit Printer(bool json) : json_(json) {}
  Status Take(std::string_view data) {
    pending_.append(data);
    size_t start = 0;
    for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string_view line(pending_.data() + start, nl - start);
      if (json_) {
        std::cout << line << '\n';
      } else {
        std::cout << FormatRecord(line) << '\n';
      }
    }
    pending_.erase(0, start);
    std::cout.flush();
    if (!std::cout) return MakeError(Errc::kIo, "cannot write to stdout");
    return Ok();
  }

 private:
  bool json_;
  std::string pending_;
};

int RunLogs(const Client& client, const LogsArgs& args) {
  if (int code = CheckName(args.name); code != kExitOk) return code;
  Printer printer(args.json);
  auto response = client.GetStream(
      LogsPath(args), [&printer](std::string_view data) { return printer.Take(data); });
  if (!response.ok()) return Fail(response.error());
  if (response->status < 200 || response->status >= 300) {
    if (auto reply = ParseReply(*response); !reply.ok()) return Fail(reply.error());
  }
  return kExitOk;
}

}  // namespace

Verb AddLogsCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand("logs", "Show a function's output and requests");
  command->footer(kHelp);
  auto args = std::make_shared<LogsArgs>();
  command->add_option("NAME", args->name, "Name of the function")->required();
  command->add_flag("-f,--follow", args->follow, "Keep printing new lines as they are written");
  command->add_option("--since", args->since,
                      "Only lines from this long ago (10m, 2h) or since this RFC 3339 time");
  command->add_option("--tail", args->tail, "Only the last N lines (with -f: before new ones)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--stream", args->stream, "Only stdout, stderr or request lines")
      ->check(CLI::IsMember({"stdout", "stderr", "request"}));
  command->add_flag("--json", args->json, "Print the records as stored, one JSON object a line");
  return {command, [args](const Client& client) { return RunLogs(client, *args); }};
}

}  // namespace faas::cli
