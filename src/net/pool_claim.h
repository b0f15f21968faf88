// A claim on an address pool within the current network namespace, held for the life
// of the process. Two faasd in one namespace with overlapping pools would each take
// the other's `lo:faas` addresses for leftovers of a crash and remove them; with a
// claim the second one refuses to start instead.
//
// The claim is an abstract unix socket named after the pool ("@faasd/pool/10.0.0.0/24"):
// abstract names belong to a network namespace, need no file, and vanish with their
// owner, even after kill -9. Other pools claimed in the namespace are found in
// /proc/net/unix, and their owner's pid through SO_PEERCRED.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/error.h"
#include "common/fd.h"
#include "net/ip_pool.h"

namespace faas::net {

class PoolClaim {
 public:
  // Claims `pool`. kConflict, naming the other pool and its owner's pid, when this
  // pool or an overlapping one is claimed already.
  static Result<PoolClaim> Take(const IpPool& pool);

  // The listening socket: the claim holds as long as it is open. Whoever checks for
  // a claim connects to learn the owner's pid: the owner should accept and close such
  // connections (AcceptAndClose), e.g. from an event loop that takes the socket.
  UniqueFd TakeFd() && { return std::move(fd_); }
  // Accepts and closes every pending connection on the claim's socket; never blocks.
  static void AcceptAndClose(int claim_fd);

  static std::string NameOf(const IpPool& pool) { return "faasd/pool/" + pool.ToString(); }

 private:
  explicit PoolClaim(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace faas::net
