// faasd: the daemon. `faasd [flags]` serves; `faasd unpack IMAGE DIR` imports an
// image archive into DIR without a daemon (for debugging and tests).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/file.h"
#include "common/log.h"
#include "faasd/flags.h"
#include "image/importer.h"
#include "server/daemon.h"

namespace {

// Every client, container and control connection costs faasd fds: take all the hard
// limit allows rather than the soft default (often 1024).
void RaiseFdLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0)
    spdlog::debug("raised the open files limit from {} to {}", soft, limit.rlim_max);
}

int Unpack(const std::string& image, const std::string& dir,
           const faas::image::ImportLimits& limits) {
  faas::UniqueFd fd(image == "-" ? ::dup(0) : ::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    std::cerr << "Error: open " << image << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  std::string work = dir + ".work";
  auto status = faas::MakeDirs(dir);
  if (status.ok()) status = faas::MakeDirs(work);
  if (!status.ok()) {
    std::cerr << "Error: " << status.error().message << "\n";
    return 1;
  }
  faas::image::ImportStats stats;
  auto config = faas::image::ImportImage(fd.get(), work, dir, limits, &stats);
  (void)faas::RemoveTree(work);
  if (!config.ok()) {
    std::cerr << "Error: " << config.error().message << "\n";
    return 1;
  }
  nlohmann::json out = {
      {"cmd", config->cmd},         {"env", config->env},     {"working_dir", config->working_dir},
      {"user", config->user},       {"layers", stats.layers}, {"files", stats.files},
      {"bytes", stats.rootfs_bytes}};
  if (stats.skipped_devices > 0) {
    spdlog::warn("import of {}: {}", image, faas::image::SkippedSummary(stats));
    out["skipped"] = {{"devices", stats.skipped_devices}};
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const faas::faasd::Flags flags = faas::faasd::ParseFlags(argc, argv);
  if (flags.exit_code) return *flags.exit_code;
  if (auto st = faas::SetupLogging(flags.log_level); !st.ok()) {
    std::cerr << "Error: " << st.error().message << "\n";
    return 2;
  }
  if (flags.unpack) return Unpack(flags.unpack_image, flags.unpack_dir, flags.options.limits);

  if (::geteuid() != 0) {
    std::cerr << "Error: faasd must run as root (it adds addresses and starts containers)\n";
    return 1;
  }
  auto options = faas::faasd::DaemonOptionsFrom(flags);
  if (!options.ok()) {
    std::cerr << "Error: " << options.error().message << "\n";
    return 2;
  }
  RaiseFdLimit();
  faas::server::Daemon daemon(std::move(options).value());
  return daemon.Run();
}
