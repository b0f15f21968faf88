// A small client for faasd's control API: HTTP/1.1 over faasd's unix socket or over TCP.
#pragma once

#include <cstddef>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::cli {

// Where faasd listens, and how to authenticate to it.
struct Endpoint {
  std::string socket_path;  // when set: HTTP over this unix socket
  std::string url;          // otherwise: this base URL, e.g. "http://127.0.0.1:8080"
  std::string token;        // when set: sent as "Authorization: Bearer <token>"

  // The socket path or the URL, for messages.
  const std::string& Where() const { return socket_path.empty() ? url : socket_path; }
};

// The daemon's answer, whatever its status.
struct Response {
  long status = 0;  // NOLINT(runtime/int): libcurl's type for it
  std::string body;
};

// Fills up to `len` bytes of `buf` with the next part of a request body; 0 means the end.
// An error aborts the request, and the request returns that error.
using BodySource = std::function<Result<size_t>(char* buf, size_t len)>;

// Takes the next part of a 2xx answer's body as it arrives (any size, any boundary). An
// error aborts the request, and the request returns that error.
using BodySink = std::function<Status(std::string_view data)>;

// One blocking request per call. A non-2xx status is still a Response; errors are for requests
// that got no answer: faasd unreachable (Errc::kUnavailable, the message names the socket or
// URL), a broken connection, or the BodySource's own error.
class Client {
 public:
  explicit Client(Endpoint endpoint);

  Result<Response> Get(const std::string& path) const;
  Result<Response> Delete(const std::string& path) const;
  // A GET whose 2xx body goes to `sink` as it arrives, however long it lasts (a followed
  // log); the Response's body is empty then. Other answers are kept as Get keeps them.
  Result<Response> GetStream(const std::string& path, BodySink sink) const;
  // A POST without a body (the path, query included, says it all).
  Result<Response> Post(const std::string& path) const;

  // POSTs a body of unknown length with chunked transfer encoding, pulling it from `body` as it
  // is sent, so it is never held whole in memory. `headers` are extra "Name: value" lines. If
  // faasd answers before it has read the whole body (an early rejection), that answer is the
  // Response rather than a send failure.
  Result<Response> PostStream(const std::string& path, const std::vector<std::string>& headers,
                              BodySource body) const;

  const Endpoint& endpoint() const { return endpoint_; }

 private:
  Endpoint endpoint_;
};

// One HTTP request to a function's own address, not to faasd (faas invoke).
struct Call {
  std::string method;                // empty: POST with a body, GET without
  std::string url;                   // e.g. "http://10.0.0.10:80/path"
  std::vector<std::string> headers;  // extra "Name: value" lines
  std::optional<std::string> body;   // sent with Content-Length
};

// Sends `call` and writes the answer to `out` as it arrives: with `with_head` the status
// line and header lines first, as received, then the body. Returns the HTTP status. Fails
// when there was no complete answer (nothing listening, a connect timeout, a broken
// connection) or `out` could not be written; what was written by then stays written.
Result<long> SendCall(const Call& call, std::FILE* out, bool with_head);  // NOLINT(runtime/int)

// Turns a Response into its JSON body when the status is 2xx. Otherwise the error carries the
// daemon's message from {"error": "..."}, or the body as text when it is not that. Key order is
// kept as the daemon sent it.
Result<nlohmann::ordered_json> ParseReply(const Response& response);
// The same for a request's result: an error of the request itself passes through.
Result<nlohmann::ordered_json> ParseReply(Result<Response> response);

// A string member of a reply object; missing or not a string is an unexpected reply.
Result<std::string> StringField(const nlohmann::ordered_json& reply, const char* key);

}  // namespace faas::cli
