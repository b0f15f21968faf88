#include "pull/session.h"

#include <arpa/inet.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

#include "image/archive_util.h"

namespace faas::pull {
namespace {

constexpr size_t kMaxTokenAnswerBytes = 1 << 20;

using Clock = std::chrono::steady_clock;

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr addr{};
  return ::inet_pton(AF_INET, host.c_str(), &addr) == 1 && (ntohl(addr.s_addr) >> 24) == 127;
}

// A URL's host[:port], for the plain-HTTP rule of a token realm.
std::string UrlDomain(const std::string& url) {
  size_t start = url.find("://");
  if (start == std::string::npos) return "";
  start += 3;
  return url.substr(start, url.find_first_of("/?#", start) - start);
}

bool PrintableToken(const std::string& token) {
  if (token.empty() || token.size() > 64 * 1024) return false;
  for (char c : token)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

}  // namespace

bool PlainHttpAllowed(const std::string& domain, const std::vector<std::string>& insecure) {
  if (IsLoopback(DomainHost(domain))) return true;
  for (const std::string& entry : insecure)
    if (entry == domain || entry == DomainHost(domain)) return true;
  return false;
}

std::string RegistrySays(const std::string& body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array() ||
      doc["errors"].empty() || !doc["errors"][0].is_object())
    return "";
  const nlohmann::json& first = doc["errors"][0];
  auto code = first.find("code");
  if (code == first.end() || !code->is_string()) return "";
  return " (" + image::Quote(code->get<std::string>()) + ")";
}

RegistrySession::RegistrySession(const Reference& ref, const RegistryOptions& options,
                                 std::function<bool()> cancelled, std::string what)
    : ref_(ref),
      options_(options),
      cancelled_(std::move(cancelled)),
      what_(std::move(what)),
      deadline_(Clock::now() + options.timeout),
      plain_http_(PlainHttpAllowed(ref_.domain, options.insecure)),
      base_url_((plain_http_ ? "http://" : "https://") + ref_.ApiHost()) {}

Status RegistrySession::Check() const {
  if (cancelled_ && cancelled_()) return MakeError(Errc::kUnavailable, what_ + " called off");
  if (Clock::now() >= deadline_) {
    return MakeError(Errc::kUnavailable, what_ + " of " + ref_.String() + " took longer than " +
                                             std::to_string(options_.timeout.count()) + " s");
  }
  return Ok();
}

HttpRequest RegistrySession::Transport(HttpRequest request, bool allow_http) const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
  request.allow_http = allow_http;
  request.ca_file = options_.ca_file;
  request.timeout = std::max(left, std::chrono::milliseconds(1));
  request.connect_timeout = options_.connect_timeout;
  request.low_speed_bytes = options_.low_speed_bytes;
  request.low_speed_time = options_.low_speed_time;
  request.max_redirects = options_.max_redirects;
  request.cancelled = cancelled_;
  return request;
}

std::string RegistrySession::Resolve(const std::string& location) const {
  if (location.starts_with("http://") || location.starts_with("https://")) return location;
  return base_url_ + (location.starts_with("/") ? "" : "/") + location;
}

Result<HttpAnswer> RegistrySession::Send(HttpRequest request, const std::string& path,
                                         const BodySink& sink) {
  if (request.url.empty()) request.url = base_url_ + path;
  const size_t own_headers = request.headers.size();
  for (int attempt = 0;; ++attempt) {
    FAAS_RETURN_IF_ERROR(Check());
    HttpRequest sent = Transport(request, plain_http_);
    sent.headers.resize(own_headers);
    if (!authorization_.empty()) sent.headers.push_back(authorization_);
    FAAS_ASSIGN_OR_RETURN(HttpAnswer answer, HttpSend(sent, sink));
    if (answer.status != 401) return answer;
    // A challenge answered before, or twice in one request: the credentials are refused.
    if (attempt > 0 ||
        std::find(answered_.begin(), answered_.end(), answer.www_authenticate) != answered_.end()) {
      return MakeError(Errc::kInvalidArgument,
                       "registry " + ref_.domain + " refused the credentials for " +
                           ref_.repository + " (401): check the registry auth file");
    }
    answered_.push_back(answer.www_authenticate);
    FAAS_RETURN_IF_ERROR(Authenticate(answer.www_authenticate));
  }
}

Status RegistrySession::Authenticate(const std::string& www_authenticate) {
  auto challenge = ParseChallenge(www_authenticate);
  if (!challenge.ok()) {
    return MakeError(Errc::kUnavailable,
                     "registry " + ref_.domain + " answered 401 without a usable challenge");
  }
  std::optional<Credentials> creds = options_.auth.Find(ref_.domain);
  if (challenge->scheme == "bearer") return FetchToken(*challenge);
  if (challenge->scheme != "basic") {
    return MakeError(Errc::kUnavailable, "registry " + ref_.domain + " asks for " +
                                             image::Quote(challenge->scheme) +
                                             " authentication: only basic and bearer are known");
  }
  if (!creds) {
    return MakeError(Errc::kInvalidArgument, "registry " + ref_.domain +
                                                 " needs credentials: none for it in the "
                                                 "registry auth file");
  }
  authorization_ = "Authorization: Basic " + Base64Encode(creds->username + ":" + creds->password);
  return Ok();
}

Status RegistrySession::FetchToken(const Challenge& challenge) {
  auto realm = challenge.params.find("realm");
  if (realm == challenge.params.end() ||
      !(realm->second.starts_with("https://") || realm->second.starts_with("http://"))) {
    return MakeError(Errc::kUnavailable,
                     "registry " + ref_.domain + " asks for a token without an http(s) realm");
  }
  std::string url = realm->second;
  char sep = url.find('?') == std::string::npos ? '?' : '&';
  if (auto service = challenge.params.find("service"); service != challenge.params.end()) {
    url += sep + std::string("service=") + UrlEncode(service->second);
    sep = '&';
  }
  auto scope = challenge.params.find("scope");
  url += sep + std::string("scope=") +
         UrlEncode(scope != challenge.params.end() ? scope->second
                                                   : "repository:" + ref_.repository + ":pull");
  HttpRequest request = Transport(HttpRequest{.url = url},
                                  PlainHttpAllowed(UrlDomain(realm->second), options_.insecure));
  std::optional<Credentials> creds = options_.auth.Find(ref_.domain);
  if (creds) {
    request.headers.push_back("Authorization: Basic " +
                              Base64Encode(creds->username + ":" + creds->password));
  }
  std::string body;
  auto answer = HttpSend(request, [&body](std::string_view chunk) -> Status {
    if (body.size() + chunk.size() > kMaxTokenAnswerBytes) {
      return MakeError(Errc::kTooLarge,
                       "token is larger than " + std::to_string(kMaxTokenAnswerBytes) + " bytes");
    }
    body.append(chunk);
    return Ok();
  });
  if (!answer.ok()) return std::move(answer).error().Wrap("token for " + ref_.domain);
  if (answer->status == 401 || answer->status == 403) {
    return MakeError(Errc::kInvalidArgument, "the token server of " + ref_.domain + " refused " +
                                                 (creds ? "the credentials" : "anonymous access") +
                                                 " (" + std::to_string(answer->status) +
                                                 "): check the registry auth file");
  }
  if (answer->status != 200) {
    return MakeError(Errc::kUnavailable, "the token server of " + ref_.domain + " answered " +
                                             std::to_string(answer->status));
  }
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string token;
  if (doc.is_object()) {
    for (const char* key : {"token", "access_token"})
      if (doc.contains(key) && doc[key].is_string() && token.empty()) token = doc[key];
  }
  if (!PrintableToken(token)) {
    return MakeError(Errc::kUnavailable,
                     "the token server of " + ref_.domain + " answered without a token");
  }
  authorization_ = "Authorization: Bearer " + token;
  return Ok();
}

Error RegistrySession::StatusError(const HttpAnswer& answer, const std::string& what) const {
  const std::string says = RegistrySays(answer.error_body);
  if (answer.status == 404) {
    return MakeError(Errc::kNotFound, what + ": not found in registry " + ref_.domain + says);
  }
  return MakeError(Errc::kUnavailable, what + ": registry " + ref_.domain + " answered " +
                                           std::to_string(answer.status) + says);
}

}  // namespace faas::pull
