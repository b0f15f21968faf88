#include "api/handlers.h"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/string.hpp>
#include <charconv>
#include <optional>

namespace faas::api {
namespace {

using boost::beast::http::verb;

bool TakePrefix(const std::string& target, const char* prefix, std::string* rest) {
  std::string p(prefix);
  if (target.rfind(p, 0) != 0 || target.size() == p.size()) return false;
  *rest = target.substr(p.size());
  return rest->find('/') == std::string::npos;
}

bool IsPort(std::string_view text) {
  return !text.empty() && text.size() <= 5 &&
         text.find_first_not_of("0123456789") == std::string_view::npos;
}

Reply MethodNotAllowed() { return {405, ErrorJson("method not allowed")}; }

// "/api/functions/NAME/ACTION": NAME and ACTION, neither empty nor holding a '/'.
bool TakeAction(const std::string& target, std::string* name, std::string* action) {
  std::string rest;
  const std::string prefix = "/api/functions/";
  if (target.rfind(prefix, 0) != 0) return false;
  rest = target.substr(prefix.size());
  size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string::npos || slash + 1 == rest.size()) return false;
  *name = rest.substr(0, slash);
  *action = rest.substr(slash + 1);
  return action->find('/') == std::string::npos;
}

// The version of "?version=N" (N >= 1); none without that query. Other parameters
// are ignored.
Result<std::optional<uint64_t>> VersionQuery(const std::string& target) {
  size_t query = target.find('?');
  if (query == std::string::npos) return std::optional<uint64_t>();
  std::string_view rest = std::string_view(target).substr(query + 1);
  while (!rest.empty()) {
    std::string_view param = rest.substr(0, rest.find('&'));
    rest.remove_prefix(std::min(rest.size(), param.size() + 1));
    if (!param.starts_with("version=")) continue;
    std::string_view text = param.substr(8);
    uint64_t version = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
    if (ec != std::errc() || end != text.data() + text.size() || version == 0)
      return MakeError(Errc::kInvalidArgument,
                       "invalid version '" + std::string(text) + "': expected a number from 1");
    return std::optional<uint64_t>(version);
  }
  return std::optional<uint64_t>();
}

Reply FunctionAction(Backend& backend, verb method, const std::string& raw_target,
                     const std::string& name, const std::string& action) {
  if (action == "versions") {
    if (method != verb::get) return MethodNotAllowed();
    return ReplyFor(backend.Versions(name));
  }
  if (action == "rollback") {
    if (method != verb::post) return MethodNotAllowed();
    auto version = VersionQuery(raw_target);
    if (!version.ok()) return ReplyFor(std::move(version).error());
    return Reply{.later = [&backend, name, version = *version](Reply::Answer answer) {
      backend.StartRollback(name, version, std::move(answer));
    }};
  }
  return {404, ErrorJson("no such endpoint: " + raw_target.substr(0, raw_target.find('?')))};
}

Reply MetricsReply(Backend& backend, verb method) {
  if (method != verb::get) return MethodNotAllowed();
  std::optional<std::string> text = backend.Metrics();
  if (!text) return {404, ErrorJson("no such endpoint: /metrics")};
  return Reply::Text(std::move(*text), kMetricsContentType);
}

}  // namespace

nlohmann::json ErrorJson(const std::string& message) { return {{"error", message}}; }

Reply ReplyFor(Result<nlohmann::json> result) {
  if (result.ok()) return {200, std::move(result).value()};
  return {HttpStatusFor(result.error().code), ErrorJson(result.error().message)};
}

std::string DumpJson(const nlohmann::json& body) {
  return body.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

bool IsLoopbackHost(const std::string& header) {
  constexpr auto npos = std::string_view::npos;
  const std::string_view host = header;
  std::string_view name = host;
  std::string_view after;  // empty or ":PORT"
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    if (close == npos) return false;
    name = host.substr(1, close - 1);
    if (name.find(':') == npos) return false;  // brackets hold an IPv6 address only
    after = host.substr(close + 1);
  } else if (size_t colon = host.find(':'); colon != npos) {
    name = host.substr(0, colon);
    after = host.substr(colon);
  }
  if (!after.empty() && (after[0] != ':' || !IsPort(after.substr(1)))) return false;
  if (boost::beast::iequals(boost::beast::string_view(name.data(), name.size()), "localhost"))
    return true;
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(name), ec);
  return !ec && address.is_loopback();
}

Reply Route(Backend& backend, verb method, const std::string& raw_target) {
  std::string target = raw_target.substr(0, raw_target.find('?'));
  std::string name;
  if (target == "/healthz") {
    if (method != verb::get) return MethodNotAllowed();
    std::vector<std::string> reasons = backend.Degraded();
    if (reasons.empty()) return {200, {{"status", "ok"}}};
    return {503, {{"status", "degraded"}, {"reasons", reasons}}};
  }
  if (target == "/metrics") return MetricsReply(backend, method);
  if (target == "/api/list") {
    if (method != verb::get) return MethodNotAllowed();
    return {200, backend.List()};
  }
  if (target == "/api/new") return MethodNotAllowed();
  if (target == "/api/version") {
    if (method != verb::get) return MethodNotAllowed();
    return {200, backend.Version()};
  }
  if (target == "/api/nodes") {
    if (method != verb::get) return MethodNotAllowed();
    return ReplyFor(backend.Nodes());
  }
  if (TakePrefix(target, "/api/ip/", &name)) {
    if (method != verb::get) return MethodNotAllowed();
    return ReplyFor(backend.GetIp(name));
  }
  if (TakePrefix(target, "/api/functions/", &name)) {
    if (method == verb::get) return ReplyFor(backend.Describe(name));
    if (method != verb::delete_) return MethodNotAllowed();
    return Reply{.later = [&backend, name](Reply::Answer answer) {
      backend.StartRemove(name, std::move(answer));
    }};
  }
  if (std::string action; TakeAction(target, &name, &action))
    return FunctionAction(backend, method, raw_target, name, action);
  return {404, ErrorJson("no such endpoint: " + target)};
}

Reply RouteMetricsOnly(Backend& backend, verb method, const std::string& raw_target) {
  if (method == verb::get && raw_target.substr(0, raw_target.find('?')) == "/metrics")
    return MetricsReply(backend, method);
  return {404, ErrorJson("not found: this listener serves GET /metrics only")};
}

}  // namespace faas::api
