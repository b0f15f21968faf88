// IPv4 addresses on local interfaces, managed over rtnetlink (libmnl), without the `ip` tool.
//
// Everything here acts on the network namespace the process (for Netlink: the thread that
// called Open) was in at the time of the call. Callers own the consequences: adding an address
// to the host's namespace makes it reachable from the host.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "net/ip_pool.h"

struct mnl_socket;
struct nlmsghdr;

namespace faas::net {

struct AddressInfo {
  Ipv4 address;  // the local address (IFA_LOCAL)
  int prefix_len = 0;
  int ifindex = 0;
  std::string label;  // IFA_LABEL: "lo" for an unlabelled address on lo, "lo:faas" when labelled
};

// One NETLINK_ROUTE socket (close-on-exec), owned by this object and closed by its destructor.
// Every request carries a fresh sequence number and waits for the kernel's answer (ACK, or the
// end of a dump) before returning, so a successful return means the kernel applied the change.
// When the kernel refuses, its errno is kept in Error::sys_errno and named in the message.
// Errors not listed per method are kIo.
//
// Move-only. Not thread-safe: use one object from one thread (the daemon's event loop).
// Calls block until the kernel answers, which for these requests is immediate.
class Netlink {
 public:
  // Opens and binds the socket. Fails with kIo (sys_errno set) when the kernel refuses.
  static Result<Netlink> Open();

  Netlink(Netlink&&) noexcept;
  Netlink& operator=(Netlink&&) noexcept;
  ~Netlink();

  // Every IPv4 address on every interface (RTM_GETADDR dump), in kernel order, with its label.
  Result<std::vector<AddressInfo>> ListIpv4();

  // Adds `ip`/`prefix_len` (1..32) to interface `ifindex` with IFA_LABEL `label`.
  // `label` must be the interface's name ("lo": an unlabelled address) or that name, ':' and a
  // suffix of [A-Za-z0-9_.-], at most 15 characters in all ("lo:faas"); otherwise
  // kInvalidArgument and nothing is sent. No such interface: kNotFound. The address already on
  // the interface (any label): kConflict with sys_errno EEXIST.
  Status AddAddress(int ifindex, Ipv4 ip, int prefix_len, const std::string& label);

  // Removes `ip`/`prefix_len` from interface `ifindex`, whatever its label.
  // Not there (ENOENT, EADDRNOTAVAIL) or no such interface (ENODEV): kNotFound.
  // Removing a primary address also removes the secondaries of its subnet unless
  // promote_secondaries is on for the interface (see EnablePromoteSecondaries).
  Status DeleteAddress(int ifindex, Ipv4 ip, int prefix_len);

  // Sets IFF_UP on interface `ifindex` (no-op when already up). No such interface: kNotFound.
  Status SetLinkUp(int ifindex);

 private:
  struct SocketCloser {
    void operator()(mnl_socket* socket) const;
  };
  // Called once per reply message that is not a control message; returns an MNL_CB_* value.
  using MessageCallback = int (*)(const nlmsghdr* message, void* data);

  Netlink(std::unique_ptr<mnl_socket, SocketCloser> socket, unsigned int portid);

  // Stamps `request` with the next sequence number, sends it and reads replies until the ACK or
  // NLMSG_DONE. Fails with the kernel's errno, or the socket's, prefixed by `what`.
  Status Exchange(nlmsghdr* request, MessageCallback on_message, void* data,
                  const std::string& what);
  // The name of interface `ifindex` as the kernel reports it (RTM_GETLINK).
  Result<std::string> LinkName(int ifindex);

  // libmnl owns the fd: mnl_socket_close() closes it, so it is not also held in a UniqueFd.
  std::unique_ptr<mnl_socket, SocketCloser> socket_;
  unsigned int portid_ = 0;
  uint32_t seq_ = 0;
  std::vector<char> reply_buffer_;
};

// The ifindex of "lo" in the calling thread's namespace. kNotFound if there is none.
Result<int> LoopbackIndex();

// Writes 1 to /proc/sys/net/ipv4/conf/<ifname>/promote_secondaries, so that removing the first
// (primary) address of a subnet promotes another one instead of removing all the others of that
// subnet with it. `ifname` must be a plain interface name (kInvalidArgument otherwise); no such
// interface: kNotFound; other write failures: kIo.
Status EnablePromoteSecondaries(const std::string& ifname);

}  // namespace faas::net
