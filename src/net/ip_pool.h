// IPv4 addresses as values, and the pool that hands out function addresses.
//
// Pure computation: no system calls, no global state. Both types are plain values, safe to copy
// and to use from any thread as long as one object is not written concurrently.
#pragma once

#include <compare>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"

namespace faas::net {

// One IPv4 address, held in host byte order (10.0.0.1 is 0x0a000001).
struct Ipv4 {
  uint32_t value = 0;

  // Strict dotted quad: four decimal parts 0..255, no leading zeros, no spaces, nothing else.
  // "10.0.0.10" parses; "10.0.0", "10.0.0.256", "010.0.0.1", " 10.0.0.1" fail with
  // kInvalidArgument.
  static Result<Ipv4> Parse(std::string_view text);
  // "10.0.0.10". Parse(ip.ToString()) gives `ip` back.
  std::string ToString() const;

  auto operator<=>(const Ipv4&) const = default;
};

// A CIDR subnet whose addresses network+10 .. broadcast-1 are given to functions; the first ten
// are left for the host (gateway and friends), the broadcast address is never used.
class IpPool {
 public:
  // Accepts "a.b.c.d/n" with 8 <= n <= 30, no host bits set, and a non-empty usable range
  // (so in practice n <= 28). Anything else fails with kInvalidArgument.
  static Result<IpPool> Parse(std::string_view cidr);

  int prefix_len() const { return prefix_len_; }
  Ipv4 network() const { return network_; }
  // First and last usable address, inclusive.
  Ipv4 first() const { return first_; }
  Ipv4 last() const { return last_; }

  // True when `ip` lies within first()..last().
  bool Contains(Ipv4 ip) const { return first_ <= ip && ip <= last_; }

  // The lowest usable address not in `taken` (entries outside the range are ignored).
  // Fails with kExhausted, "address pool 10.0.0.0/24 is exhausted", when every one is taken.
  // Cost is O(log |taken| + number of taken addresses in the range).
  Result<Ipv4> Allocate(const std::set<Ipv4>& taken) const;

  // "10.0.0.0/24".
  std::string ToString() const;

 private:
  IpPool(Ipv4 network, int prefix_len, Ipv4 first, Ipv4 last)
      : network_(network), prefix_len_(prefix_len), first_(first), last_(last) {}

  Ipv4 network_;
  int prefix_len_ = 0;
  Ipv4 first_;
  Ipv4 last_;
};

}  // namespace faas::net
