#include "cli/client.h"

#include <curl/curl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "common/fd.h"

namespace faas::cli {
namespace {

constexpr long kConnectTimeoutSeconds = 10;     // NOLINT(runtime/int)
constexpr long kUploadBufferBytes = 512 << 10;  // NOLINT(runtime/int)
constexpr size_t kMaxReplyBytes = 64 << 20;
constexpr size_t kMaxExcerptBytes = 500;
constexpr size_t kMaxEarlyAnswerBytes = 64 << 10;
constexpr int kDrainTimeoutMs = 1000;

// libcurl's process-wide state: set up on first use, torn down at exit.
void InitCurlOnce() {
  struct Global {
    Global() { curl_global_init(CURL_GLOBAL_DEFAULT); }
    ~Global() { curl_global_cleanup(); }
  };
  static Global global;
}

struct EasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

Status Append(Slist& list, const std::string& line) {
  curl_slist* head = curl_slist_append(list.get(), line.c_str());
  if (head == nullptr) return MakeError(Errc::kInternal, "out of memory building headers");
  (void)list.release();  // `head` is the same list, grown, or a new one when it was empty
  list.reset(head);
  return Ok();
}

struct Request {
  const char* method = "GET";
  std::string path;
  std::vector<std::string> headers;
  const BodySource* body = nullptr;  // set for a streamed POST
  const BodySink* sink = nullptr;    // set for a streamed GET
};

// What the libcurl callbacks of one transfer share.
struct Transfer {
  CURL* curl = nullptr;
  const BodySource* source = nullptr;
  std::optional<Error> source_error;
  const BodySink* sink = nullptr;
  std::string reply;
  bool reply_too_large = false;
  UniqueFd socket;  // of a streamed POST, kept from libcurl's close to read an early answer
};

size_t OnWrite(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t len = size * count;
  long status = 0;  // NOLINT(runtime/int): libcurl's type
  if (transfer->sink &&
      curl_easy_getinfo(transfer->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
      status >= 200 && status < 300) {
    if (Status st = (*transfer->sink)(std::string_view(data, len)); !st.ok()) {
      transfer->source_error = std::move(st).error();
      return 0;  // aborts the transfer
    }
    return len;
  }
  if (transfer->reply.size() + len > kMaxReplyBytes) {
    transfer->reply_too_large = true;
    return 0;  // aborts the transfer
  }
  transfer->reply.append(data, len);
  return len;
}

size_t OnRead(char* buf, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  Result<size_t> got = (*transfer->source)(buf, size * count);
  if (got.ok()) return *got;
  transfer->source_error = std::move(got).error();
  return CURL_READFUNC_ABORT;
}

int OnCloseSocket(void* user, curl_socket_t fd) {
  static_cast<Transfer*>(user)->socket.Reset(fd);
  return 0;
}

std::string BaseUrl(const Endpoint& endpoint) {
  if (!endpoint.socket_path.empty()) return "http://localhost";
  std::string url = endpoint.url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

Status SetHeaders(CURL* curl, const Endpoint& endpoint, const Request& request, Slist& headers) {
  for (const std::string& line : request.headers) FAAS_RETURN_IF_ERROR(Append(headers, line));
  if (!endpoint.token.empty()) {
    FAAS_RETURN_IF_ERROR(Append(headers, "Authorization: Bearer " + endpoint.token));
  }
  if (request.body != nullptr) {
    FAAS_RETURN_IF_ERROR(Append(headers, "Transfer-Encoding: chunked"));
    FAAS_RETURN_IF_ERROR(Append(headers, "Expect:"));  // no 100-continue round trip
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  return Ok();
}

void SetOptions(CURL* curl, const Endpoint& endpoint, const Request& request, Transfer& transfer) {
  const std::string url = BaseUrl(endpoint) + request.path;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());  // libcurl copies strings
  if (!endpoint.socket_path.empty()) {
    curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, endpoint.socket_path.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");  // faasd is local: never via http_proxy
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  if (std::strcmp(request.method, "GET") != 0 && request.body == nullptr) {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method);
  }
  if (request.body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, kUploadBufferBytes);
    curl_easy_setopt(curl, CURLOPT_CLOSESOCKETFUNCTION, OnCloseSocket);
    curl_easy_setopt(curl, CURLOPT_CLOSESOCKETDATA, &transfer);
  }
}

bool IsConnectFailure(CURLcode code) {
  return code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST ||
         code == CURLE_OPERATION_TIMEDOUT;  // only the connect phase has a timeout
}

bool IsBrokenConnection(CURLcode code) {
  return code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING ||
         code == CURLE_PARTIAL_FILE;
}

// The errno of a failed connect, 0 for other failures or when libcurl did not see one.
int ConnectErrno(CURL* curl, CURLcode code) {
  if (!IsConnectFailure(code)) return 0;
  long os_errno = 0;  // NOLINT(runtime/int): libcurl's type
  curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
  return static_cast<int>(os_errno);
}

// Why a transfer failed, in words: the connect's errno, else libcurl's detail or its code.
std::string Why(CURL* curl, CURLcode code, const char* detail) {
  if (const int os_errno = ConnectErrno(curl, code); os_errno != 0) return std::strerror(os_errno);
  return detail[0] != '\0' ? detail : curl_easy_strerror(code);
}

Error TransportError(CURL* curl, const Endpoint& endpoint, CURLcode code, const char* detail) {
  const std::string where = endpoint.Where();
  const std::string why = Why(curl, code, detail);
  if (const int os_errno = ConnectErrno(curl, code);
      (os_errno == EACCES || os_errno == EPERM) && !endpoint.socket_path.empty()) {
    return Error{Errc::kUnavailable, os_errno,
                 "permission denied on " + where +
                     ": faasd's socket is root's alone, run faas as root (e.g. with sudo)"};
  }
  if (IsConnectFailure(code)) {
    return MakeError(Errc::kUnavailable,
                     "cannot reach faasd at " + where + ": " + why + " (is faasd running?)");
  }
  if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL) {
    return MakeError(Errc::kInvalidArgument, "bad faasd URL " + where + ": " + why);
  }
  if (IsBrokenConnection(code)) {
    return MakeError(Errc::kUnavailable,
                     "lost the connection to faasd at " + where + " before it answered: " + why);
  }
  return MakeError(Errc::kIo, "request to faasd at " + where + " failed: " + why);
}

// What the peer sent before it closed: read until EOF, an error, a pause or the size cap.
std::string Drain(int fd) {
  std::string data;
  char buf[4096];
  while (data.size() < kMaxEarlyAnswerBytes) {
    pollfd readable{.fd = fd, .events = POLLIN, .revents = 0};
    if (poll(&readable, 1, kDrainTimeoutMs) <= 0) break;
    const ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    data.append(buf, static_cast<size_t>(got));
  }
  return data;
}

// Decodes a chunked body, as much of it as there is.
std::string Dechunk(std::string_view in) {
  std::string out;
  while (true) {
    const size_t eol = in.find("\r\n");
    if (eol == std::string_view::npos) break;
    const size_t size = std::strtoul(std::string(in.substr(0, eol)).c_str(), nullptr, 16);
    in.remove_prefix(eol + 2);
    if (size == 0) break;
    out.append(in.substr(0, size));
    in.remove_prefix(std::min(in.size(), size + 2));
  }
  return out;
}

// Fills `response` from a raw HTTP/1.x response; leaves it alone when `raw` is not one.
void ParseRawResponse(const std::string& raw, Response& response) {
  const size_t space = raw.find(' ');
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || space == std::string::npos || head_end == std::string::npos) {
    return;
  }
  response.status = std::strtol(raw.c_str() + space + 1, nullptr, 10);
  std::string head = raw.substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  response.body = raw.substr(head_end + 4);
  if (head.find("transfer-encoding: chunked") != std::string::npos) {
    response.body = Dechunk(response.body);
  }
}

// libcurl gives up on the first failed send, even when the peer failed it by rejecting the
// upload and closing, and its answer sits unread in the socket. Reads that answer, or the rest
// of it when libcurl already had the status line.
void RecoverEarlyAnswer(int fd, Response& response) {
  const std::string rest = Drain(fd);
  if (response.status != 0) {
    response.body += rest;
  } else {
    ParseRawResponse(rest, response);
  }
}

// Decides what a finished transfer means.
Result<Response> Outcome(CURL* curl, const Endpoint& endpoint, CURLcode code, const char* detail,
                         Transfer& transfer) {
  if (transfer.source_error) return std::move(*transfer.source_error);
  if (transfer.reply_too_large) {
    return MakeError(Errc::kIo, "the reply from faasd at " + endpoint.Where() + " is over 64 MiB");
  }
  Response response;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  response.body = std::move(transfer.reply);
  // faasd may reject an upload before reading all of it, answer, and close: libcurl then
  // reports a failed send, but the answer is what the user needs to see.
  if (code == CURLE_SEND_ERROR && transfer.socket) {
    RecoverEarlyAnswer(transfer.socket.get(), response);
  }
  if (code == CURLE_OK || response.status >= 300) return response;
  return TransportError(curl, endpoint, code, detail);
}

Result<Response> Perform(const Endpoint& endpoint, const Request& request) {
  InitCurlOnce();
  Transfer transfer;  // these outlive the handle, whose cleanup may call OnCloseSocket
  transfer.source = request.body;
  transfer.sink = request.sink;
  Slist headers;
  EasyHandle curl(curl_easy_init());
  if (!curl) return MakeError(Errc::kInternal, "cannot initialize libcurl");
  transfer.curl = curl.get();
  FAAS_RETURN_IF_ERROR(SetHeaders(curl.get(), endpoint, request, headers));
  SetOptions(curl.get(), endpoint, request, transfer);
  char detail[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, detail);
  const CURLcode code = curl_easy_perform(curl.get());
  return Outcome(curl.get(), endpoint, code, detail, transfer);
}

// What the libcurl callbacks of one SendCall share.
struct CallTransfer {
  std::FILE* out = nullptr;
  bool with_head = false;
  int write_errno = 0;  // set when writing `out` failed
};

size_t Emit(CallTransfer& transfer, const char* data, size_t len) {
  if (std::fwrite(data, 1, len, transfer.out) == len) return len;
  transfer.write_errno = errno != 0 ? errno : EIO;
  return 0;  // aborts the transfer
}

size_t OnCallBody(char* data, size_t size, size_t count, void* user) {
  return Emit(*static_cast<CallTransfer*>(user), data, size * count);
}

size_t OnCallHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<CallTransfer*>(user);
  return transfer->with_head ? Emit(*transfer, data, size * count) : size * count;
}

void SetCallOptions(CURL* curl, const Call& call, curl_slist* headers, CallTransfer& transfer) {
  curl_easy_setopt(curl, CURLOPT_URL, call.url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");  // a function's address is local
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnCallBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnCallHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  if (call.body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body->size()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call.body->data());  // not copied: outlives
  }
  if (call.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);  // else libcurl would wait for a body
  } else if (!call.method.empty()) {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call.method.c_str());
  }
}

std::string Excerpt(std::string text) {
  const auto is_space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!text.empty() && is_space(text.back())) text.pop_back();
  text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), is_space));
  if (text.size() > kMaxExcerptBytes) text = text.substr(0, kMaxExcerptBytes) + "...";
  return text;
}

Errc ErrcForStatus(long status) {  // NOLINT(runtime/int)
  switch (status) {
    case 400:
      return Errc::kInvalidArgument;
    case 404:
      return Errc::kNotFound;
    case 409:
      return Errc::kConflict;
    case 413:
      return Errc::kTooLarge;
    case 503:
      return Errc::kUnavailable;
    default:
      return Errc::kInternal;
  }
}

std::string ErrorMessage(const Response& response, const nlohmann::ordered_json& json) {
  if (json.is_object()) {
    const auto it = json.find("error");
    if (it != json.end() && it->is_string()) return it->get<std::string>();
  }
  const std::string status = "faasd answered HTTP " + std::to_string(response.status);
  const std::string text = Excerpt(response.body);
  return text.empty() ? status : status + ": " + text;
}

}  // namespace

Client::Client(Endpoint endpoint) : endpoint_(std::move(endpoint)) {}

Result<Response> Client::Get(const std::string& path) const {
  return Perform(endpoint_, Request{"GET", path, {}, nullptr, nullptr});
}

Result<Response> Client::GetStream(const std::string& path, BodySink sink) const {
  return Perform(endpoint_, Request{"GET", path, {}, nullptr, &sink});
}

Result<Response> Client::Delete(const std::string& path) const {
  return Perform(endpoint_, Request{"DELETE", path, {}, nullptr, nullptr});
}

Result<Response> Client::Post(const std::string& path) const {
  return Perform(endpoint_, Request{"POST", path, {}, nullptr, nullptr});
}

Result<Response> Client::PostStream(const std::string& path,
                                    const std::vector<std::string>& headers,
                                    BodySource body) const {
  return Perform(endpoint_, Request{"POST", path, headers, &body, nullptr});
}

Result<long> SendCall(const Call& call, std::FILE* out, bool with_head) {  // NOLINT(runtime/int)
  InitCurlOnce();
  CallTransfer transfer{.out = out, .with_head = with_head};
  Slist headers;
  for (const std::string& line : call.headers) FAAS_RETURN_IF_ERROR(Append(headers, line));
  FAAS_RETURN_IF_ERROR(Append(headers, "Expect:"));  // no 100-continue round trip
  EasyHandle curl(curl_easy_init());
  if (!curl) return MakeError(Errc::kInternal, "cannot initialize libcurl");
  SetCallOptions(curl.get(), call, headers.get(), transfer);
  char detail[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, detail);
  const CURLcode code = curl_easy_perform(curl.get());
  if (std::fflush(out) != 0 && transfer.write_errno == 0) transfer.write_errno = errno;
  if (transfer.write_errno != 0) return SysError(transfer.write_errno, "cannot write the answer");
  if (code != CURLE_OK) {
    const std::string what =
        IsConnectFailure(code) ? "cannot connect to " : "no whole answer from ";
    return MakeError(Errc::kUnavailable, what + call.url + ": " + Why(curl.get(), code, detail));
  }
  long status = 0;  // NOLINT(runtime/int): libcurl's type
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  return status;
}

Result<nlohmann::ordered_json> ParseReply(Result<Response> response) {
  if (!response.ok()) return std::move(response).error();
  return ParseReply(*response);
}

Result<nlohmann::ordered_json> ParseReply(const Response& response) {
  auto json = nlohmann::ordered_json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (response.status < 200 || response.status >= 300) {
    return MakeError(ErrcForStatus(response.status), ErrorMessage(response, json));
  }
  if (json.is_discarded()) {
    return MakeError(Errc::kIo, "unexpected reply from faasd: " + Excerpt(response.body));
  }
  return json;
}

Result<std::string> StringField(const nlohmann::ordered_json& reply, const char* key) {
  if (reply.is_object()) {
    const auto it = reply.find(key);
    if (it != reply.end() && it->is_string()) return it->get<std::string>();
  }
  return MakeError(Errc::kIo, std::string("unexpected reply from faasd: no \"") + key + "\" in " +
                                  Excerpt(reply.dump()));
}

}  // namespace faas::cli
