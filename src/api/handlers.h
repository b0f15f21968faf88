// Routing of the control API's small requests (everything but the streamed deploy).
#pragma once

#include <boost/beast/http/verb.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "api/server.h"

namespace faas::api {

inline constexpr char kImageNameHeader[] = "X-Image-Name";
inline constexpr char kFunctionOptionsHeader[] = "X-Function-Options";

inline constexpr char kForeignHostMessage[] =
    "the TCP API without a token only answers requests for localhost or a loopback address "
    "(Host header)";

// The media type of GET /metrics: the Prometheus text format.
inline constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

struct Reply {
  // A body that is not JSON (the metrics), sent as it is with `content_type`.
  static Reply Text(std::string text, std::string content_type) {
    return {.status = 200,
            .body = {},
            .text = std::move(text),
            .content_type = std::move(content_type)};
  }

  using Answer = std::function<void(Result<nlohmann::json>)>;

  int status = 200;
  nlohmann::json body = {};
  std::optional<std::string> text = std::nullopt;  // set: sent instead of `body`
  std::string content_type = {};
  // Set: the answer comes later, from the operation this starts (a cluster node's
  // removal or rollback writes etcd first); status and body are unused.
  std::function<void(Answer)> later = {};
};

nlohmann::json ErrorJson(const std::string& message);
// 200 with the result, or the status of its error with ErrorJson.
Reply ReplyFor(Result<nlohmann::json> result);

// Serialises a reply. Bytes that are not UTF-8 (a request path may carry any) are
// replaced rather than thrown on: a bad path must get a 404, not end the daemon.
std::string DumpJson(const nlohmann::json& body);

// Whether a Host header value names this machine's loopback: "localhost", an IPv4
// loopback address or "[::1]", each with or without a ":PORT". Anything else, an
// empty value included, could be a DNS name a web page rebound to 127.0.0.1.
bool IsLoopbackHost(const std::string& host);

// Maps a method and target to the backend; unknown paths are 404, known paths with
// the wrong method 405.
Reply Route(Backend& backend, boost::beast::http::verb method, const std::string& target);

// The metrics listener's one route: GET /metrics; anything else is 404.
Reply RouteMetricsOnly(Backend& backend, boost::beast::http::verb method,
                       const std::string& target);

}  // namespace faas::api
