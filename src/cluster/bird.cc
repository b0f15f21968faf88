#include "cluster/bird.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/file.h"
#include "runtime/process.h"

namespace faas::cluster {

std::string BirdRoutes::Render(const std::set<std::string>& ips, const std::string& lifeline) {
  std::string text = "# Written by faasd: the functions this node serves.\n";
  for (const std::string& ip : ips) text += "route " + ip + "/32 via \"" + lifeline + "\";\n";
  return text;
}

Status BirdRoutes::Open() {
  if (options_.lifeline.empty() || options_.lifeline.size() >= IFNAMSIZ)
    return MakeError(Errc::kInvalidArgument, "bad lifeline interface name");
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) return SysError(errno, "open /dev/net/tun");
  struct ifreq request {};
  request.ifr_flags = IFF_TUN | IFF_NO_PI;
  options_.lifeline.copy(request.ifr_name, IFNAMSIZ - 1);
  if (::ioctl(tun.get(), TUNSETIFF, &request) != 0) {
    const int err = errno;
    if (err == EBUSY)
      return MakeError(Errc::kConflict, "interface " + options_.lifeline +
                                            " is held by another process (another faasd?)");
    return SysError(err, "create interface " + options_.lifeline);
  }
  UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!control) return SysError(errno, "socket");
  if (::ioctl(control.get(), SIOCGIFFLAGS, &request) != 0)
    return SysError(errno, "flags of " + options_.lifeline);
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(control.get(), SIOCSIFFLAGS, &request) != 0)
    return SysError(errno, "set " + options_.lifeline + " up");
  tun_ = std::move(tun);
  return Ok();
}

Status BirdRoutes::Export(const std::set<std::string>& ips) {
  FAAS_RETURN_IF_ERROR(AtomicWriteFile(options_.routes_file, Render(ips, options_.lifeline)));
  FAAS_ASSIGN_OR_RETURN(runtime::Captured birdc,
                        runtime::Capture({options_.birdc, "-s", options_.socket, "configure"},
                                         64 * 1024, std::nullopt, /*with_stderr=*/true));
  std::string& output = birdc.out;
  FAAS_ASSIGN_OR_RETURN(int status, birdc.child.Wait());
  // "Reconfigured", or "Reconfiguration in progress" while bird finishes the last one.
  if (status == 0 && output.find("Reconfigur") != std::string::npos) return Ok();
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  return MakeError(Errc::kUnavailable, "birdc configure (" + runtime::DescribeWaitStatus(status) +
                                           "): " + (output.empty() ? "no output" : output));
}

}  // namespace faas::cluster
