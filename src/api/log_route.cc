#include "api/log_route.h"

#include <cstdio>

namespace faas::api {

std::optional<std::variant<Reply, LogsRequest>> ParseLogsRequest(boost::beast::http::verb method,
                                                                 const std::string& target,
                                                                 logs::Clock::time_point now) {
  const std::string prefix = "/api/functions/", suffix = "/logs";
  const size_t query_at = target.find('?');
  const std::string path = target.substr(0, query_at);
  if (!path.starts_with(prefix) || !path.ends_with(suffix) ||
      path.size() <= prefix.size() + suffix.size())
    return std::nullopt;
  std::string name = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  if (name.find('/') != std::string::npos) return std::nullopt;
  if (method != boost::beast::http::verb::get)
    return Reply{405, ErrorJson("method not allowed: read logs with GET")};
  auto query = logs::ParseLogQuery(query_at == std::string::npos
                                       ? std::string_view()
                                       : std::string_view(target).substr(query_at + 1),
                                   now);
  if (!query.ok())
    return Reply{HttpStatusFor(query.error().code), ErrorJson(query.error().message)};
  return LogsRequest{std::move(name), std::move(query).value()};
}

std::string Chunk(std::string_view data) {
  if (data.empty()) return {};
  char size[24];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out = size;
  out.append(data);
  out += "\r\n";
  return out;
}

}  // namespace faas::api
