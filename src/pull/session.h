// One conversation with a registry about one repository, for a pull or a push: the
// base URL (HTTPS, or plain HTTP where PlainHttpAllowed), the deadline of the whole
// transfer, and authentication. A 401 is answered by authenticating as its challenge
// says (HTTP basic, or the bearer token flow: a token fetched from the realm for the
// challenge's scope, with the basic credentials if the auth file has some), then the
// request is sent again; a push's first upload asks for a wider scope than its first
// check did, and gets a token for it. Credentials and tokens never appear in a message.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "pull/auth.h"
#include "pull/http.h"
#include "pull/reference.h"

namespace faas::pull {

struct RegistryOptions {
  AuthFile auth;
  std::vector<std::string> insecure;  // "host[:port]" reached over plain HTTP
  std::string ca_file;                // PEM CAs trusted besides the system's; empty: none
  std::chrono::milliseconds connect_timeout{10000};
  long low_speed_bytes = 1024;              // NOLINT(runtime/int): slower than this ...
  std::chrono::seconds low_speed_time{30};  // ... for this long aborts a transfer
  std::chrono::seconds timeout{1800};       // a whole pull or push
  long max_redirects = 5;                   // NOLINT(runtime/int)
  size_t max_manifest_bytes = 4 << 20;
};

// Whether `domain` ("host[:port]") is reached over plain HTTP: a loopback host, or one
// named in `insecure` (with the same port, or without one).
bool PlainHttpAllowed(const std::string& domain, const std::vector<std::string>& insecure);

// The registry's own words from an error body ({"errors": [{"code", ...}]}): " (CODE)",
// or "" when it has none.
std::string RegistrySays(const std::string& body);

class RegistrySession {
 public:
  // `options` is borrowed and must outlive the session. `cancelled` (may be empty) is
  // polled during transfers: true calls the transfer off (kUnavailable). `what` names
  // the transfer in a timeout's message ("pull", "push").
  RegistrySession(const Reference& ref, const RegistryOptions& options,
                  std::function<bool()> cancelled, std::string what);

  // kUnavailable once called off or past the deadline.
  Status Check() const;

  // Sends `request` to `path` of the registry (or to `request.url` when it is already
  // set: an upload location), with the authorization known so far; a 401 is answered
  // once per challenge. The transport's options (timeouts, TLS, plain HTTP) are the
  // session's.
  Result<HttpAnswer> Send(HttpRequest request, const std::string& path, const BodySink& sink);

  // The error for an unexpected answer: kNotFound for a 404, kUnavailable otherwise,
  // with the registry's error code if it gave one.
  Error StatusError(const HttpAnswer& answer, const std::string& what) const;

  // An absolute URL for a Location header (absolute, or a path on this registry).
  std::string Resolve(const std::string& location) const;

  const Reference& ref() const { return ref_; }

 private:
  HttpRequest Transport(HttpRequest request, bool allow_http) const;
  Status Authenticate(const std::string& www_authenticate);
  Status FetchToken(const Challenge& challenge);

  Reference ref_;
  const RegistryOptions& options_;
  std::function<bool()> cancelled_;
  std::string what_;
  std::chrono::steady_clock::time_point deadline_;
  bool plain_http_;
  std::string base_url_;
  std::string authorization_;          // "Authorization: ..." once known; never in a message
  std::vector<std::string> answered_;  // the challenges answered so far
};

}  // namespace faas::pull
