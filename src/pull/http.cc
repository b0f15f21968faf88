#include "pull/http.h"

#include <curl/curl.h>

#include <cctype>
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

int OnProgress(void* opaque, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* state = static_cast<State*>(opaque);
  return (*state->cancelled && (*state->cancelled)()) ? 1 : 0;
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

Result<HttpAnswer> HttpGet(const HttpGetRequest& request, const BodySink& sink) {
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
  State state{.sink = &sink, .answer = {}, .sink_error = {}, .cancelled = &request.cancelled};
  char error_text[CURL_ERROR_SIZE] = "";
  const char* protocols = request.allow_http ? "http,https" : "https";
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
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
  if (code == CURLE_OK) return std::move(state.answer);
  std::string why = error_text[0] != '\0' ? error_text : curl_easy_strerror(code);
  if (code == CURLE_TOO_MANY_REDIRECTS)
    why = "too many redirects (more than " + std::to_string(request.max_redirects) + ")";
  if (code == CURLE_ABORTED_BY_CALLBACK) why = "called off";
  if (code == CURLE_UNSUPPORTED_PROTOCOL && !request.allow_http)
    why += " (plain HTTP is only for loopback and --insecure-registry hosts)";
  return MakeError(Errc::kUnavailable, "GET " + request.url + ": " + why);
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
