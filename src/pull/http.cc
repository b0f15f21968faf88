#include "pull/http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

namespace faas::pull {
namespace {

constexpr size_t kMaxErrorBody = 4096;

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct State {
  const BodySink* sink = nullptr;
  HttpAnswer answer;
  std::optional<Error> sink_error;
  const std::function<bool()>* cancelled = nullptr;
  // The request body: from `fd`, else from `text`; `left` bytes still to send.
  int fd = -1;
  std::string_view text;
  uint64_t offset = 0;  // in `fd`
  uint64_t left = 0;
  std::optional<Error> read_error;
};

std::string Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  return std::string(text);
}

bool HeaderIs(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

// Each response of a redirect chain starts with its status line: what was kept of
// the one before is dropped.
size_t OnHeader(char* data, size_t size, size_t count, void* opaque) {
  auto* state = static_cast<State*>(opaque);
  std::string_view line(data, size * count);
  HttpAnswer& answer = state->answer;
  if (line.starts_with("HTTP/")) {
    answer = HttpAnswer{};
    size_t space = line.find(' ');
    if (space != std::string_view::npos)
      answer.status = std::atol(std::string(line.substr(space + 1, 3)).c_str());
  } else if (HeaderIs(line, "content-type")) {
    answer.content_type = Trim(line.substr(13));
  } else if (HeaderIs(line, "docker-content-digest")) {
    answer.docker_content_digest = Trim(line.substr(22));
  } else if (HeaderIs(line, "www-authenticate") && answer.www_authenticate.empty()) {
    answer.www_authenticate = Trim(line.substr(17));
  } else if (HeaderIs(line, "location")) {
    answer.location = Trim(line.substr(9));
  }
  return size * count;
}

size_t OnBody(char* data, size_t size, size_t count, void* opaque) {
  auto* state = static_cast<State*>(opaque);
  const size_t n = size * count;
  if (state->answer.status < 200 || state->answer.status > 299) {
    std::string& body = state->answer.error_body;
    body.append(data, std::min(n, kMaxErrorBody - std::min(body.size(), kMaxErrorBody)));
    return n;
  }
  Status st = (*state->sink)(std::string_view(data, n));
  if (st.ok()) return n;
  state->sink_error = std::move(st).error();
  return 0;  // CURLE_WRITE_ERROR
}

size_t OnRead(char* buffer, size_t size, size_t count, void* opaque) {
  auto* state = static_cast<State*>(opaque);
  const size_t room = std::min<uint64_t>(size * count, state->left);
  if (room == 0) return 0;
  if (state->fd < 0) {
    std::memcpy(buffer, state->text.data(), room);
    state->text.remove_prefix(room);
    state->left -= room;
    return room;
  }
  ssize_t n;
  do {
    n = ::pread(state->fd, buffer, room, static_cast<off_t>(state->offset));
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    state->read_error = n == 0 ? MakeError(Errc::kIo, "the body's file ended early")
                               : SysError(errno, "read the body's file");
    return CURL_READFUNC_ABORT;
  }
  state->offset += static_cast<uint64_t>(n);
  state->left -= static_cast<uint64_t>(n);
  return static_cast<size_t>(n);
}

int OnProgress(void* opaque, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* state = static_cast<State*>(opaque);
  return (*state->cancelled && (*state->cancelled)()) ? 1 : 0;
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

Result<HttpAnswer> HttpSend(const HttpRequest& request, const BodySink& sink) {
  GlobalInit();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return MakeError(Errc::kInternal, "libcurl: out of memory");
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  for (const std::string& line : request.headers) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) return MakeError(Errc::kInternal, "libcurl: out of memory");
    (void)headers.release();
    headers.reset(next);
  }
  const bool get = request.method == "GET" || request.method == "HEAD";
  if (!get) {
    // A large body is sent at once, without waiting for a 100 Continue that a proxy
    // may never send.
    curl_slist* next = curl_slist_append(headers.get(), "Expect:");
    if (next == nullptr) return MakeError(Errc::kInternal, "libcurl: out of memory");
    (void)headers.release();
    headers.reset(next);
  }
  State state{.sink = &sink,
              .answer = {},
              .sink_error = {},
              .cancelled = &request.cancelled,
              .fd = request.body_fd,
              .text = request.body,
              .offset = 0,
              .left = request.body_fd >= 0 ? request.body_size : request.body.size(),
              .read_error = {}};
  char error_text[CURL_ERROR_SIZE] = "";
  const char* protocols = request.allow_http ? "http,https" : "https";
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, get ? 1L : 0L);
  if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (!get) {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(state.left));
    curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(c, CURLOPT_READDATA, &state);
  }
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, request.max_redirects);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(request.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, request.low_speed_bytes);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(request.low_speed_time.count()));
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &state);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_text);
  // CAPATH (the system's /etc/ssl/certs) stays: the file adds to it.
  if (!request.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, request.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_USERAGENT, "faasd/" FAAS_VERSION);
  CURLcode code = curl_easy_perform(c);
  if (state.sink_error) return std::move(*state.sink_error);
  if (state.read_error) return std::move(*state.read_error);
  if (code == CURLE_OK) return std::move(state.answer);
  std::string why = error_text[0] != '\0' ? error_text : curl_easy_strerror(code);
  if (code == CURLE_TOO_MANY_REDIRECTS)
    why = "too many redirects (more than " + std::to_string(request.max_redirects) + ")";
  if (code == CURLE_ABORTED_BY_CALLBACK) why = "called off";
  if (code == CURLE_UNSUPPORTED_PROTOCOL && !request.allow_http)
    why += " (plain HTTP is only for loopback and --insecure-registry hosts)";
  return MakeError(Errc::kUnavailable, request.method + " " + request.url + ": " + why);
}

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace faas::pull
