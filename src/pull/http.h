// One HTTP request with libcurl, its answer's body streamed to a sink: the registry
// client's transport.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace faas::pull {

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST, PUT or PATCH
  std::string url = {};
  std::vector<std::string> headers = {};  // "Name: value" lines
  // What a POST, PUT or PATCH sends: `body_fd` (borrowed, its first `body_size` bytes, read with
  // pread: the same request can be sent again) if it is set, else `body`. Redirects are followed
  // for GET and HEAD only: a registry's upload location is its own to give.
  std::string body = {};
  int body_fd = -1;
  uint64_t body_size = 0;
  // Plain http:// allowed, for the URL and for redirects; otherwise https only. An
  // Authorization header is never sent on to another host by a redirect.
  bool allow_http = false;
  // PEM CA certificates trusted for HTTPS besides the system's; empty: none.
  std::string ca_file = {};
  std::chrono::milliseconds timeout{60000};  // the whole transfer
  std::chrono::milliseconds connect_timeout{10000};
  // Slower than `low_speed_bytes` per second for `low_speed_time` aborts the transfer.
  long low_speed_bytes = 1024;  // NOLINT(runtime/int): libcurl's type
  std::chrono::seconds low_speed_time{30};
  long max_redirects = 5;  // NOLINT(runtime/int)
  // Polled during the transfer; true aborts it with kUnavailable.
  std::function<bool()> cancelled = {};
};

struct HttpAnswer {
  long status = 0;  // NOLINT(runtime/int): of the last response, after redirects
  std::string content_type;
  std::string docker_content_digest;
  std::string www_authenticate;  // the first, if several
  std::string error_body;        // the start of a non-2xx body (4 KiB at most)
  std::string location;          // an upload's URL (202) or a redirect's, as sent
};

// Gets the body of a 2xx answer, chunk by chunk; an error aborts the transfer and is
// what HttpGet returns.
using BodySink = std::function<Status(std::string_view chunk)>;

// Sends the request and streams a 2xx body to `sink`. Any status is an answer; errors
// are for transfers that did not complete: kUnavailable for connection failures,
// timeouts, too many redirects, a cancel (the message says which, with the URL, which
// carries no credentials), or the sink's own error. Thread-safe (one easy handle per
// call). Never throws.
Result<HttpAnswer> HttpSend(const HttpRequest& request, const BodySink& sink);

// Percent-encodes a query parameter's value.
std::string UrlEncode(std::string_view text);

}  // namespace faas::pull
