#include "cluster/bird.h"

#include <fcntl.h>
#include <unistd.h>

#include "common/file.h"
#include "runtime/process.h"

namespace faas::cluster {

std::string BirdRoutes::Render(const std::set<std::string>& ips) {
  std::string text = "# Written by faasd: the functions this node serves.\n";
  for (const std::string& ip : ips) text += "route " + ip + "/32 blackhole;\n";
  return text;
}

Status BirdRoutes::Export(const std::set<std::string>& ips) {
  FAAS_RETURN_IF_ERROR(AtomicWriteFile(options_.routes_file, Render(ips)));
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return SysError(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  FAAS_ASSIGN_OR_RETURN(
      runtime::Child child,
      runtime::Spawn({.argv = {options_.birdc, "-s", options_.socket, "configure"},
                      .stdin_fd = -1,
                      .stdout_fd = write_end.get(),
                      .stderr_fd = write_end.get()}));
  write_end.Reset();
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = ::read(read_end.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (output.size() < 64 * 1024) output.append(buffer, static_cast<size_t>(n));
  }
  FAAS_ASSIGN_OR_RETURN(int status, child.Wait());
  // "Reconfigured", or "Reconfiguration in progress" while bird finishes the last one.
  if (status == 0 && output.find("Reconfigur") != std::string::npos) return Ok();
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  return MakeError(Errc::kUnavailable, "birdc configure (" + runtime::DescribeWaitStatus(status) +
                                           "): " + (output.empty() ? "no output" : output));
}

}  // namespace faas::cluster
