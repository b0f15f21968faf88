// The routes a node announces by BGP through bird2: faasd writes a configuration
// fragment with one static /32 route per function this node serves, and has bird
// reload it (`birdc -s SOCKET configure`). The node's bird.conf includes the file in a
// static protocol and exports that protocol's routes to its BGP peers
// (docs/CLUSTER.md shows one):
//
//   protocol static faas_functions { ipv4; include "/run/faasd/bird-routes.conf"; }
//
// A blackhole route is enough: the route exists only to be exported (bird puts
// itself as the next hop of an eBGP route), and the node's own kernel table gets none
// of it (the address is local on lo).
#pragma once

#include <set>
#include <string>

#include "common/error.h"

namespace faas::cluster {

struct BirdOptions {
  std::string routes_file = {};  // empty: no routes are exported
  std::string socket = "/run/bird/bird.ctl";
  std::string birdc = "/usr/sbin/birdc";
};

class BirdRoutes {
 public:
  explicit BirdRoutes(BirdOptions options) : options_(std::move(options)) {}

  // Writes the routes of `ips` (replacing the file at once) and has bird reload it.
  // Blocking: never on the event loop. An error says what bird answered.
  Status Export(const std::set<std::string>& ips);
  // The file's text for `ips`.
  static std::string Render(const std::set<std::string>& ips);

 private:
  BirdOptions options_;
};

}  // namespace faas::cluster
