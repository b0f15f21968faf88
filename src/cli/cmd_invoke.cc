// faas invoke NAME: one HTTP request to the function at its own address, its answer on stdout.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/file.h"
#include "common/io.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Sends one HTTP request to the function NAME at its own address (looked up as 'faas ip'\n"
    "does) and prints the answer's body as it arrives; with -i the status line and headers\n"
    "come first. -d sends DATA as the body (default method POST): -d @FILE sends a file's\n"
    "bytes, -d @- those of stdin. -H adds a header, e.g. -H 'Content-Type: text/plain'.\n"
    "Exit status: 0 for an answer below 500, 1 for a 5xx answer (the handler's or faasd's\n"
    "own, e.g. 502 when the handler failed to start) or when the function cannot be reached.";

constexpr size_t kMaxDataBytes = 1ull << 30;

struct InvokeOptions {
  std::string name;
  std::string method;
  std::string path = "/";
  std::vector<std::string> headers;
  std::string data;
  bool has_data = false;
  bool include = false;
};

// RFC 9110 token characters: method and header names.
bool IsToken(std::string_view text) {
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return !text.empty() && std::all_of(text.begin(), text.end(), [&](unsigned char c) {
    return std::isalnum(c) != 0 || kSpecials.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool HasControlOrSpace(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](unsigned char c) { return c <= ' ' || c == 0x7f; });
}

Error Usage(const std::string& message) { return MakeError(Errc::kInvalidArgument, message); }

Status CheckRequestParts(const InvokeOptions& options) {
  if (!options.method.empty() && !IsToken(options.method)) {
    return Usage("invalid method '" + options.method + "': expected a word like GET or PUT");
  }
  if (HasControlOrSpace(options.path)) {
    return Usage("invalid --path '" + options.path +
                 "': spaces and control characters must be "
                 "percent-encoded");
  }
  for (const std::string& header : options.headers) {
    const size_t colon = header.find(':');
    const bool bad_value = std::any_of(header.begin(), header.end(), [](unsigned char c) {
      return (c < ' ' && c != '\t') || c == 0x7f;
    });
    if (colon == std::string::npos || !IsToken(header.substr(0, colon)) || bad_value) {
      return Usage("invalid header '" + header + "': expected 'Name: value'");
    }
  }
  return Ok();
}

// The body -d asks for: DATA itself, a file's bytes (@FILE) or stdin's (@-).
Result<std::string> ReadData(const std::string& data) {
  if (!data.starts_with('@')) return data;
  const std::string path = data.substr(1);
  Result<std::string> bytes =
      path == "-" ? ReadAll(STDIN_FILENO, kMaxDataBytes) : ReadFile(path, kMaxDataBytes);
  if (!bytes.ok()) {
    return Usage("cannot read the data of -d " + data + ": " + bytes.error().message);
  }
  return bytes;
}

std::string Url(const FunctionAddress& address, const std::string& path) {
  const std::string slash = path.starts_with('/') ? "" : "/";
  return "http://" + address.ip + ":" + std::to_string(address.port) + slash + path;
}

int RunInvoke(const Client& client, const InvokeOptions& options) {
  if (int code = CheckName(options.name); code != kExitOk) return code;
  if (Status valid = CheckRequestParts(options); !valid.ok()) {
    return Fail(valid.error(), kExitUsage);
  }
  std::optional<std::string> body;  // read before any request: a missing file changes nothing
  if (options.has_data) {
    Result<std::string> data = ReadData(options.data);
    if (!data.ok()) return Fail(data.error(), kExitUsage);
    body = std::move(data).value();
  }
  Result<FunctionAddress> address = LookUpAddress(client, options.name);
  if (!address.ok()) return Fail(address.error());
  const Call call{.method = options.method,
                  .url = Url(*address, options.path),
                  .headers = options.headers,
                  .body = std::move(body)};
  Result<long> status = SendCall(call, stdout, options.include);  // NOLINT(runtime/int)
  if (!status.ok()) return Fail(std::move(status).error().Wrap("invoke " + options.name));
  return *status >= 500 ? kExitFailure : kExitOk;
}

}  // namespace

Verb AddInvokeCommand(CLI::App& app) {
  CLI::App* command =
      app.add_subcommand("invoke", "Call a function over HTTP and print its answer");
  command->footer(kHelp);
  auto options = std::make_shared<InvokeOptions>();
  command->add_option("NAME", options->name, "Name of the function")->required();
  command->add_option("-X,--request", options->method,
                      "HTTP method (default GET, or POST with -d)");
  command->add_option("--path", options->path, "Request path and query, e.g. /items?id=3")
      ->capture_default_str();
  command->add_option("-H,--header", options->headers, "Header 'Name: value' (repeatable)")
      ->allow_extra_args(false);
  CLI::Option* data =
      command->add_option("-d,--data", options->data, "Request body: DATA, @FILE, or @- for stdin");
  command->add_flag("-i,--include", options->include, "Print the status line and headers too");
  return {command, [options, data](const Client& client) {
            options->has_data = data->count() > 0;
            return RunInvoke(client, *options);
          }};
}

}  // namespace faas::cli
