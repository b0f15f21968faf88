#include "api/push_route.h"

#include <charconv>

#include "common/text.h"

namespace faas::api {
namespace {

Reply BadRequest(const std::string& message) { return Reply{400, ErrorJson(message)}; }

}  // namespace

std::optional<std::variant<Reply, PushRequest>> ParsePushRequest(boost::beast::http::verb method,
                                                                 const std::string& target) {
  const std::string prefix = "/api/functions/", suffix = "/push";
  const size_t query_at = target.find('?');
  const std::string path = target.substr(0, query_at);
  if (!path.starts_with(prefix) || !path.ends_with(suffix) ||
      path.size() <= prefix.size() + suffix.size())
    return std::nullopt;
  PushRequest request;
  request.name = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  if (request.name.find('/') != std::string::npos) return std::nullopt;
  if (method != boost::beast::http::verb::post)
    return Reply{405, ErrorJson("method not allowed: push with POST")};
  std::string_view rest;
  if (query_at != std::string::npos) rest = std::string_view(target).substr(query_at + 1);
  while (!rest.empty()) {
    std::string_view param = rest.substr(0, rest.find('&'));
    rest.remove_prefix(std::min(rest.size(), param.size() + 1));
    const size_t eq = param.find('=');
    const std::string_view key = param.substr(0, eq);
    auto value = PercentDecode(eq == std::string_view::npos ? "" : param.substr(eq + 1));
    if (!value.ok()) return BadRequest(value.error().message);
    if (key == "image") {
      request.image = std::move(value).value();
    } else if (key == "version") {
      uint64_t version = 0;
      auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), version);
      if (ec != std::errc() || end != value->data() + value->size() || version == 0)
        return BadRequest("invalid version '" + EscapeControl(*value) +
                          "': expected a number from 1");
      request.version = version;
    } else {
      return BadRequest("unknown query parameter '" + EscapeControl(std::string(key)) +
                        "': expected image and version");
    }
  }
  if (request.image.empty()) return BadRequest("image: the reference to push to is missing");
  return request;
}

}  // namespace faas::api
