// The routes a node announces by BGP through bird2: faasd writes a configuration
// fragment with one static /32 route per function this node serves, and has bird
// reload it (`birdc -s SOCKET configure`). The node's bird.conf includes the file in a
// static protocol and exports that protocol's routes to its BGP peers
// (docs/CLUSTER.md shows one):
//
//   protocol static faas_functions { ipv4; include "/run/faasd/bird-routes.conf"; }
//
// Each route goes via a tun interface faasd holds open (the lifeline, "faas-live"):
// the kernel removes it when faasd dies, however it dies, and bird then withdraws
// every route through it at once, though bird itself runs on. The routes exist only
// to be exported (bird puts itself as the next hop of an eBGP route); the node's own
// kernel table gets none of them (the address is local on lo).
#pragma once

#include <set>
#include <string>

#include "common/error.h"
#include "common/fd.h"

namespace faas::cluster {

struct BirdOptions {
  std::string routes_file = {};  // empty: no routes are exported
  std::string lifeline = "faas-live";
  std::string socket = "/run/bird/bird.ctl";
  std::string birdc = "/usr/sbin/birdc";
};

class BirdRoutes {
 public:
  explicit BirdRoutes(BirdOptions options) : options_(std::move(options)) {}

  // Makes the lifeline interface (up); kConflict when another process holds it.
  Status Open();

  // Writes the routes of `ips` (replacing the file at once) and has bird reload it.
  // Blocking: never on the event loop. An error says what bird answered.
  Status Export(const std::set<std::string>& ips);
  // The file's text for `ips`, routed via `lifeline`.
  static std::string Render(const std::set<std::string>& ips, const std::string& lifeline);

 private:
  BirdOptions options_;
  UniqueFd tun_;
};

}  // namespace faas::cluster
