// faas new NAME: deploys a function from the image archive on stdin (or -f FILE), streamed to
// faasd, or from a registry (--image REF), which faasd pulls from.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "common/fd.h"
#include "common/text.h"
#include "pull/reference.h"
#include "store/limits.h"

namespace faas::cli {
namespace {

constexpr char kHelp[] =
    "Deploys a function named NAME from a container image archive read on stdin, as written\n"
    "by 'podman save' or 'docker save', e.g. podman save hello | faas new hello. The archive\n"
    "is streamed to faasd, which unpacks it and starts the function with its own IP address;\n"
    "faas then prints that address and the command the function runs, and how many device\n"
    "nodes of the image (e.g. /dev/null of a debootstrap tree) were skipped, if any:\n"
    "containers get their devices from the runtime. Before answering, faasd starts one\n"
    "container of the new version and waits for its handler to connect (within\n"
    "--connect-timeout); if it does not, the deploy fails with the reason and the previous\n"
    "version keeps serving (--no-start-check skips this). NAME is 1 to 63 characters from\n"
    "a-z 0-9 _ . - starting with a letter or digit. -f FILE reads the archive from FILE\n"
    "instead (-f - is stdin). Durations take 500ms, 10s or 2m (a bare number is seconds).\n"
    "The settings are checked before anything is sent: a bad one is a usage error.\n"
    "--image REF pulls the image from its registry instead (faasd does, with its\n"
    "--registry-auth credentials), e.g. --image 127.0.0.1:5000/hello:1, --image alpine\n"
    "(docker.io/library/alpine:latest) or --image REPO@sha256:DIGEST; --platform os/arch\n"
    "picks the image of a multi-platform index (default faasd's own). Redeploying a\n"
    "reference that still resolves to the serving version's manifest, with the same\n"
    "settings, changes nothing: \"✓ NAME is already at REF (sha256:...)\".\n"
    "A redeploy keeps the settings of the version before that it does not give anew\n"
    "(--env replaces the whole environment list) and prints them, e.g.\n"
    "\"  Kept from v3: env (2), memory, warm\"; with --reset, what it does not give is\n"
    "faasd's default. faasd keeps the last versions: see 'faas versions' and 'faas rollback'.";

constexpr char kPipeHint[] = "(pipe one in: podman save IMAGE | faas new NAME; or -f FILE)";
constexpr size_t kPeekBytes = 64 << 10;

// The image archive: stdin, or the file of -f. Its first chunk is read before any request, to
// fail early when there is no image; Read() serves that chunk, then the rest.
class ImageSource {
 public:
  // Opens `path` ("-": stdin) and reads the first chunk. Fails with kInvalidArgument when there
  // is no image: a file that cannot be opened or read, stdin a terminal, nothing to read.
  Status Open(const std::string& path) {
    if (path != "-") {
      file_.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!file_) return SysError(errno, "cannot open the image " + path, Errc::kInvalidArgument);
      fd_ = file_.get();
      where_ = path;
    } else if (isatty(STDIN_FILENO)) {
      return MakeError(Errc::kInvalidArgument,
                       std::string("stdin is a terminal, not an image ") + kPipeHint);
    }
    head_.resize(kPeekBytes);
    Result<size_t> got = ReadSome(head_.data(), head_.size());
    if (!got.ok()) return Error{Errc::kInvalidArgument, got.error().sys_errno, got.error().message};
    if (*got == 0) {
      return MakeError(Errc::kInvalidArgument, fd_ == STDIN_FILENO
                                                   ? std::string("no image on stdin ") + kPipeHint
                                                   : "no image in " + where_ + ": it is empty");
    }
    head_.resize(*got);
    return Ok();
  }

  Result<size_t> Read(char* buf, size_t len) {
    if (offset_ == head_.size()) return ReadSome(buf, len);
    const size_t n = std::min(len, head_.size() - offset_);
    std::memcpy(buf, head_.data() + offset_, n);
    offset_ += n;
    return n;
  }

 private:
  Result<size_t> ReadSome(char* buf, size_t len) {
    for (;;) {
      const ssize_t got = read(fd_, buf, len);
      if (got >= 0) return static_cast<size_t>(got);
      if (errno != EINTR) return SysError(errno, "cannot read the image from " + where_);
    }
  }

  UniqueFd file_;  // the file of -f; stdin is borrowed
  int fd_ = STDIN_FILENO;
  std::string where_ = "stdin";
  std::string head_;
  size_t offset_ = 0;
};

// Per-function settings, as typed: RunNew checks them with faasd's own parser before any
// request; faasd checks them again and applies its defaults to those not given.
struct NewOptions {
  std::string name;
  std::string file = "-";  // the image archive; "-" is stdin
  std::string image;       // a reference to pull instead
  std::string platform;    // os/arch[/variant] of --image
  std::string ip;          // the address asked for a new function
  std::string memory, cpus, timeout, connect_timeout;
  int pids = 0;
  std::vector<std::string> env;
  // Scaling.
  std::optional<int64_t> warm, warm_max, max_concurrency, queue, reuse;
  std::string idle_timeout, queue_timeout, rate_limit;
  bool reset = false;
  bool no_start_check = false;

  // The X-Function-Options header value: compact JSON, ASCII only.
  // With `with_address` false: the settings alone, as ParseDeployOptions reads them.
  std::string Header(bool with_address = true) const {
    nlohmann::json json = nlohmann::json::object();
    if (!memory.empty()) json["memory"] = memory;
    if (!cpus.empty()) json["cpus"] = cpus;
    if (pids > 0) json["pids"] = pids;
    if (!timeout.empty()) json["timeout"] = timeout;
    if (!connect_timeout.empty()) json["connect_timeout"] = connect_timeout;
    if (!env.empty()) json["env"] = env;
    if (warm) json["warm"] = *warm;
    if (warm_max) json["warm_max"] = *warm_max;
    if (!idle_timeout.empty()) json["idle_timeout"] = idle_timeout;
    if (max_concurrency) json["max_concurrency"] = *max_concurrency;
    if (queue) json["queue"] = *queue;
    if (!queue_timeout.empty()) json["queue_timeout"] = queue_timeout;
    if (!rate_limit.empty()) json["rate_limit"] = rate_limit;
    if (reuse) json["reuse"] = *reuse;
    if (reset) json["reset"] = true;
    if (no_start_check) json["start_check"] = false;
    if (with_address && !ip.empty()) json["ip"] = ip;
    return json.dump(-1, ' ', /*ensure_ascii=*/true);
  }
};

Result<nlohmann::ordered_json> Deploy(const Client& client, const NewOptions& options,
                                      ImageSource& image) {
  FAAS_ASSIGN_OR_RETURN(
      Response response,
      client.PostStream("/api/new",
                        {"X-Image-Name: " + options.name, "Content-Type: application/x-tar",
                         "X-Function-Options: " + options.Header()},
                        [&image](char* buf, size_t len) { return image.Read(buf, len); }));
  return ParseReply(response);
}

// The "skipped" object of the answer: how many device nodes of the image faasd did not
// create; 0 when absent or not a count.
uint64_t SkippedDevices(const nlohmann::ordered_json& reply) {
  auto skipped = reply.find("skipped");
  if (skipped == reply.end() || !skipped->is_object()) return 0;
  auto devices = skipped->find("devices");
  if (devices == skipped->end() || !devices->is_number_unsigned()) return 0;
  return devices->get<uint64_t>();
}

// "  Kept from v3: env (2), memory, warm": the settings taken from the version before.
void PrintCarriedOver(const nlohmann::ordered_json& carried) {
  if (!carried.is_object() || !carried.contains("settings")) return;
  const nlohmann::ordered_json options = carried.value("options", nlohmann::ordered_json());
  std::string line;
  for (const auto& key : carried["settings"]) {
    if (!key.is_string()) continue;
    std::string setting = key.get<std::string>();
    if (options.is_object() && options.contains(setting) && options[setting].is_array())
      setting += " (" + std::to_string(options[setting].size()) + ")";
    std::replace(setting.begin(), setting.end(), '_', '-');
    line += (line.empty() ? "" : ", ") + setting;
  }
  if (line.empty()) return;
  std::cout << "  Kept from v" << carried.value("from_version", 0) << ": " << EscapeControl(line)
            << "\n";
}

int PrintDeployed(const std::string& name, const nlohmann::ordered_json& reply) {
  Result<std::string> ip = StringField(reply, "ip");
  if (!ip.ok()) return Fail(ip.error());
  std::cout << "✓ Deployed " << name << " at " << EscapeControl(*ip) << "\n";
  std::cout << "  Command: "
            << EscapeJsonControl(reply.value("cmd", nlohmann::ordered_json::array()).dump())
            << "\n";
  if (uint64_t devices = SkippedDevices(reply); devices > 0) {
    std::cout << "  Skipped: " << devices
              << " device node(s) of the image; containers get their devices from the runtime\n";
  }
  PrintCarriedOver(reply.value("carried_over", nlohmann::ordered_json()));
  return kExitOk;
}

// A deploy by reference: the reference goes with the settings, the body is empty.
Result<nlohmann::ordered_json> DeployReference(const Client& client, const NewOptions& options) {
  nlohmann::json header = nlohmann::json::parse(options.Header());
  header["image"] = options.image;
  if (!options.platform.empty()) header["platform"] = options.platform;
  FAAS_ASSIGN_OR_RETURN(
      Response response,
      client.PostStream("/api/new",
                        {"X-Image-Name: " + options.name,
                         "X-Function-Options: " + header.dump(-1, ' ', /*ensure_ascii=*/true)},
                        [](char*, size_t) -> Result<size_t> { return size_t{0}; }));
  return ParseReply(response);
}

// --image with an archive too (-f, or bytes waiting on stdin) is a usage error.
Status CheckNoArchive(const NewOptions& options) {
  const char* both = "give an image archive (stdin or -f) or --image, not both";
  if (options.file != "-") return MakeError(Errc::kInvalidArgument, both);
  if (isatty(STDIN_FILENO)) return Ok();
  struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
  if (::poll(&pfd, 1, 0) != 1 || (pfd.revents & POLLIN) == 0) return Ok();
  char byte;
  if (::read(STDIN_FILENO, &byte, 1) == 1) return MakeError(Errc::kInvalidArgument, both);
  return Ok();
}

int RunNewReference(const Client& client, const NewOptions& options) {
  Status checked = CheckNoArchive(options);
  if (checked.ok()) {
    auto ref = pull::ParseReference(options.image);
    checked = ref.ok() ? Ok() : Status(std::move(ref).error());
  }
  if (checked.ok() && !options.platform.empty()) {
    auto platform = pull::ParsePlatform(options.platform);
    checked = platform.ok() ? Ok() : Status(std::move(platform).error());
  }
  if (!checked.ok()) return Fail(checked.error(), kExitUsage);
  Result<nlohmann::ordered_json> reply = DeployReference(client, options);
  if (!reply.ok()) return Fail(reply.error());
  if (reply->value("unchanged", false)) {
    std::cout << "✓ " << options.name << " is already at "
              << EscapeControl(reply->value("image_ref", options.image)) << " ("
              << EscapeControl(reply->value("manifest_digest", "")) << ")\n";
    return kExitOk;
  }
  int code = PrintDeployed(options.name, *reply);
  if (code == kExitOk && reply->contains("manifest_digest")) {
    std::cout << "  Image: " << EscapeControl(reply->value("image_ref", options.image)) << " ("
              << EscapeControl(reply->value("manifest_digest", "")) << ")\n";
  }
  return code;
}

int RunNew(const Client& client, const NewOptions& options) {
  const std::string& name = options.name;
  if (int code = CheckName(name); code != kExitOk) return code;
  // faasd's own parser with its built-in defaults: a bad setting is refused before any request.
  if (auto valid = store::ParseDeployOptions(options.Header(false), {}); !valid.ok()) {
    return Fail(valid.error(), kExitUsage);
  }
  if (!options.image.empty()) return RunNewReference(client, options);
  if (!options.platform.empty()) {
    return Fail(MakeError(Errc::kInvalidArgument, "--platform goes with --image"), kExitUsage);
  }
  ImageSource image;
  if (Status opened = image.Open(options.file); !opened.ok()) {
    const bool usage = opened.error().code == Errc::kInvalidArgument;
    return Fail(opened.error(), usage ? kExitUsage : kExitFailure);
  }
  Result<nlohmann::ordered_json> reply = Deploy(client, options, image);
  if (!reply.ok()) return Fail(reply.error());
  return PrintDeployed(name, *reply);
}

}  // namespace

Verb AddNewCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "new", "Deploy a function from an image archive (stdin or -f FILE) or --image REF");
  command->footer(kHelp);
  auto options = std::make_shared<NewOptions>();
  command->add_option("NAME", options->name, "Name of the function")->required();
  command->add_option("-f,--file", options->file, "Image archive to deploy (default: stdin)");
  command->add_option("--image", options->image,
                      "Pull this image reference instead, e.g. registry.example:5000/app:1");
  command->add_option("--platform", options->platform,
                      "With --image: os/arch[/variant] to pick from a multi-platform index "
                      "(default faasd's own, e.g. linux/amd64)");
  command->add_option("--ip", options->ip,
                      "A new function's address: a free one of faasd's pool, e.g. 10.0.0.42 "
                      "(default: the lowest free; a redeploy keeps the function's)");
  command->add_option("--memory", options->memory, "Memory limit, e.g. 256M (default 512M)");
  command->add_option("--cpus", options->cpus, "CPU limit, e.g. 0.5 (default 1)");
  command->add_option("--pids", options->pids, "Most processes in the container (default 64)")
      ->check(CLI::Range(1, 65536));
  command->add_option("--timeout", options->timeout,
                      "How long a handler may run after it got its client, e.g. 10s (default 30s)");
  command->add_option("--connect-timeout", options->connect_timeout,
                      "How long a handler has to connect to /control.sock (default 5s)");
  command
      ->add_option("--env", options->env,
                   "KEY=VALUE added to the image's environment (repeat it; a redeploy's "
                   "--env replaces the list)")
      ->allow_extra_args(false);
  command->add_option("--warm", options->warm,
                      "Containers kept started ahead, each waiting for its request: the warm "
                      "path, e.g. 1 (default faasd's --warm, 0 unless set there: each request "
                      "starts its own container)");
  command->add_option("--warm-max", options->warm_max,
                      "Most containers the pool grows to under load, with --warm 1 or more "
                      "(default 8)");
  command->add_option("--idle-timeout", options->idle_timeout,
                      "Stop the pool after this long without requests, e.g. 5m (default 5m)");
  command->add_option("--max-concurrency", options->max_concurrency,
                      "Requests served at once; more wait in the queue (default 4 x cores)");
  command->add_option("--queue", options->queue,
                      "Requests that may wait; beyond it faasd answers 503 (default 64)");
  command->add_option("--queue-timeout", options->queue_timeout,
                      "Longest wait in the queue before a 503, e.g. 2s (default 10s)");
  command->add_option("--rate-limit", options->rate_limit,
                      "Requests per second; beyond it faasd answers 429 (default: off)");
  command->add_option("--reuse", options->reuse,
                      "Requests one container serves in turn; weaker isolation (default 1)");
  command->add_flag("--reset", options->reset,
                    "Redeploy with faasd's defaults for what is not given, instead of the "
                    "settings of the version before");
  command->add_flag("--no-start-check", options->no_start_check,
                    "Answer without first starting one container of the new version");
  return {command, [options](const Client& client) { return RunNew(client, *options); }};
}

}  // namespace faas::cli
