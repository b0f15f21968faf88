#include "net/pool_claim.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <sstream>

#include "common/file.h"

namespace faas::net {
namespace {

constexpr char kPrefix[] = "@faasd/pool/";

socklen_t AbstractAddress(const std::string& name, sockaddr_un* addr) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  // sun_path[0] stays NUL: an abstract name, not a file.
  name.copy(addr->sun_path + 1, sizeof addr->sun_path - 2);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// The pid that owns the abstract socket `name`, or 0 if it cannot be told.
pid_t OwnerOf(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return 0;
  sockaddr_un addr;
  socklen_t len = AbstractAddress(name, &addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return 0;
  ucred peer{};
  socklen_t peer_len = sizeof peer;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0) return 0;
  return peer.pid;
}

bool Overlap(const IpPool& a, const IpPool& b) {
  auto last = [](const IpPool& p) {
    return p.network().value | (p.prefix_len() == 0 ? ~0u : ~0u >> p.prefix_len());
  };
  return a.network().value <= last(b) && b.network().value <= last(a);
}

Error Conflict(const std::string& other, const IpPool& mine) {
  const std::string name = other.substr(1);  // without the '@'
  pid_t pid = OwnerOf(name);
  std::string who = pid > 0 ? "another faasd (pid " + std::to_string(pid) + ")" : "another faasd";
  return MakeError(Errc::kConflict, who + " serves the address pool " +
                                        name.substr(sizeof kPrefix - 2) +
                                        " in this network namespace, which overlaps " +
                                        mine.ToString() + "; give this one another --pool");
}

// Claims of other pools in this namespace that overlap `pool`: the first found, if any.
Result<std::string> FindOverlapping(const IpPool& pool) {
  FAAS_ASSIGN_OR_RETURN(std::string table, ReadFile("/proc/net/unix", 64 << 20));
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    auto at = line.rfind(' ');
    if (at == std::string::npos) continue;
    std::string path = line.substr(at + 1);
    if (path.rfind(kPrefix, 0) != 0) continue;
    auto other = IpPool::Parse(path.substr(sizeof kPrefix - 1));
    if (other.ok() && Overlap(*other, pool)) return path;
  }
  return std::string();
}

}  // namespace

Result<PoolClaim> PoolClaim::Take(const IpPool& pool) {
  FAAS_ASSIGN_OR_RETURN(std::string overlapping, FindOverlapping(pool));
  if (!overlapping.empty()) return Conflict(overlapping, pool);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return SysError(errno, "socket");
  sockaddr_un addr;
  const std::string name = NameOf(pool);
  socklen_t len = AbstractAddress(name, &addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == EADDRINUSE) return Conflict("@" + name, pool);
    return SysError(errno, "bind @" + name);
  }
  if (::listen(fd.get(), 8) != 0) return SysError(errno, "listen @" + name);
  return PoolClaim(std::move(fd));
}

void PoolClaim::AcceptAndClose(int claim_fd) {
  for (int conn; (conn = ::accept4(claim_fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) ::close(conn);
}

}  // namespace faas::net
