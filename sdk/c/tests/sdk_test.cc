// Unit tests of the C SDK (sdk/c/faas.h) and of the faas-stdio shim (sdk/stdio), which
// runs as a child process against a fake faasd.
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "faas.h"

extern char** environ;

namespace {

using namespace std::string_literals;

// ---- helpers ----------------------------------------------------------------------

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    peer = fds[0];
    handler = fds[1];
  }
  ~SocketPair() {
    if (peer >= 0) close(peer);
    if (handler >= 0) close(handler);
  }
  int peer = -1;     // the test's end: the "client"
  int handler = -1;  // the end the SDK reads
};

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;  // the other side stopped reading: the test checks its answer
    done += static_cast<size_t>(n);
  }
}

std::string ReadToEof(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// What faas_read_request() made of some bytes, copied out of the request.
struct Parsed {
  int status = -2;
  std::string err;
  std::string method, path, query, body;
  int version_minor = -1;
  std::vector<std::pair<std::string, std::string>> headers;
  std::map<std::string, std::string> lookups;  // faas_get_header() results for `lookup` names
};

// Sends `raw` from a thread (then shuts down the sending side unless `keep_open`) and parses
// it with the SDK.
Parsed Parse(const std::string& raw, const faas_limits* limits = nullptr, bool keep_open = false,
             const std::vector<std::string>& lookup = {}) {
  SocketPair sp;
  std::thread writer([&] {
    WriteAll(sp.peer, raw);
    if (!keep_open) shutdown(sp.peer, SHUT_WR);
  });
  Parsed p;
  faas_request req;
  char err[FAAS_ERR_MAX] = "";
  p.status = faas_read_request(sp.handler, &req, limits, err, sizeof err);
  p.err = err;
  if (p.status == 0) {
    p.method = req.method;
    p.path = req.path;
    p.query = req.query;
    p.version_minor = req.version_minor;
    p.body.assign(req.body, req.body_len);
    EXPECT_EQ(req.body[req.body_len], '\0');
    for (size_t i = 0; i < req.header_count; i++)
      p.headers.emplace_back(req.headers[i].name, req.headers[i].value);
    for (const std::string& name : lookup) {
      const char* v = faas_get_header(&req, name.c_str());
      if (v != nullptr) p.lookups[name] = v;
    }
    faas_request_free(&req);
    faas_request_free(&req);  // twice is harmless
  } else {
    EXPECT_EQ(req.storage_, nullptr);
  }
  shutdown(sp.handler, SHUT_RDWR);  // unblocks the writer if the SDK stopped reading
  writer.join();
  return p;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string head;
  std::string body;
};

Response ParseResponse(const std::string& raw) {
  Response r;
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return r;
  r.head = raw.substr(0, end + 4);
  r.body = raw.substr(end + 4);
  r.status = std::atoi(raw.c_str() + 9);
  size_t pos = raw.find("\r\n") + 2;
  while (pos < end) {
    size_t eol = raw.find("\r\n", pos);
    std::string line = raw.substr(pos, eol - pos);
    size_t colon = line.find(": ");
    r.headers[line.substr(0, colon)] = line.substr(colon + 2);
    pos = eol + 2;
  }
  return r;
}

std::string TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "faas-sdk-test.XXXXXX").string();
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

int CountOpenFds() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    n++;
  }
  return n;
}

// A stand-in for faasd's side of /control.sock: a listening unix socket, and a way to pass
// a message with fds to whoever connects.
class FakeControl {
 public:
  FakeControl() : dir_(TempDir()), path_(dir_ + "/control.sock") {
    listener_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(listener_, 4), 0);
  }
  ~FakeControl() {
    StopListening();
    std::filesystem::remove_all(dir_);
  }
  const std::string& path() const { return path_; }

  // What faasd does once a container has had all its clients: a later connect is refused
  // (ECONNREFUSED; the socket file stays).
  void StopListening() {
    if (listener_ >= 0) close(listener_);
    listener_ = -1;
  }
  // The socket gone altogether: a later connect fails with ENOENT.
  void Remove() {
    StopListening();
    unlink(path_.c_str());
  }
  // Whether a handler has connected and waits to be accepted.
  bool HasPendingConnect() const {
    pollfd p{listener_, POLLIN, 0};
    return listener_ >= 0 && poll(&p, 1, 0) == 1;
  }

  // Accepts one connection (within 10 s), runs `before_send` (a warm pool makes the
  // handler wait here), sends `payload` with `fds`; then closes it.
  bool Pass(const std::string& payload, const std::vector<int>& fds,
            const std::function<void()>& before_send = {}) {
    pollfd p{listener_, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) return false;
    int conn = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) return false;
    if (before_send) before_send();
    iovec iov{const_cast<char*>(payload.data()), payload.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())));
    if (!fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    bool ok = payload.empty() && fds.empty() ? true : sendmsg(conn, &msg, 0) >= 0;
    close(conn);
    return ok;
  }

 private:
  std::string dir_;
  std::string path_;
  int listener_ = -1;
};

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = getenv(name);
    if (old != nullptr) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// ---- faas_read_request: good requests ---------------------------------------------

TEST(ReadRequest, SimpleGet) {
  Parsed p =
      Parse("GET /hello/world?x=1&y=two HTTP/1.1\r\nHost: example\r\nX-A:  spaced \t\r\n\r\n",
            nullptr, false, {"host", "X-a", "missing"});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.method, "GET");
  EXPECT_EQ(p.path, "/hello/world");
  EXPECT_EQ(p.query, "x=1&y=two");
  EXPECT_EQ(p.version_minor, 1);
  ASSERT_EQ(p.headers.size(), 2u);
  EXPECT_EQ(p.headers[0], std::make_pair("Host"s, "example"s));
  EXPECT_EQ(p.headers[1], std::make_pair("X-A"s, "spaced"s));
  EXPECT_EQ(p.lookups["host"], "example");
  EXPECT_EQ(p.lookups["X-a"], "spaced");
  EXPECT_EQ(p.lookups.count("missing"), 0u);
  EXPECT_EQ(p.body, "");
}

TEST(ReadRequest, ContentLengthBody) {
  Parsed p = Parse("POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.method, "POST");
  EXPECT_EQ(p.query, "");
  EXPECT_EQ(p.body, "hello world");
}

TEST(ReadRequest, BinaryBodyWithNulBytes) {
  std::string body("a\0b\r\n\0", 6);
  Parsed p = Parse("PUT / HTTP/1.1\r\nContent-Length: 6\r\n\r\n" + body);
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, body);
}

TEST(ReadRequest, BigContentLengthBody) {
  std::string body(3 << 20, 'x');
  for (size_t i = 0; i < body.size(); i += 4099) body[i] = static_cast<char>('a' + i % 26);
  Parsed p = Parse("POST / HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n\r\n" + body);
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, body);
}

TEST(ReadRequest, ChunkedBodyWithExtensionsAndTrailers) {
  Parsed p = Parse(
      "POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n1 \r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, "hello, world");
}

TEST(ReadRequest, ManyChunks) {
  std::string raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string expected;
  for (int i = 0; i < 2000; i++) {
    std::string chunk(static_cast<size_t>(i % 700 + 1), static_cast<char>('a' + i % 26));
    char size[16];
    snprintf(size, sizeof size, "%zx\r\n", chunk.size());
    raw += size + chunk + "\r\n";
    expected += chunk;
  }
  raw += "0\r\n\r\n";
  Parsed p = Parse(raw);
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, expected);
}

TEST(ReadRequest, BareLineFeedsAndLeadingEmptyLines) {
  Parsed p = Parse("\r\n\nGET /lf HTTP/1.0\nA: 1\n\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.path, "/lf");
  EXPECT_EQ(p.version_minor, 0);
  ASSERT_EQ(p.headers.size(), 1u);
  EXPECT_EQ(p.headers[0].second, "1");
}

TEST(ReadRequest, AbsoluteFormAndAsteriskTargets) {
  Parsed p = Parse("GET http://host:8080/a/b?q=1 HTTP/1.1\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.path, "/a/b");
  EXPECT_EQ(p.query, "q=1");
  p = Parse("GET HTTPS://host?only HTTP/1.1\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.path, "/");
  EXPECT_EQ(p.query, "only");
  p = Parse("OPTIONS * HTTP/1.1\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.path, "*");
}

TEST(ReadRequest, LaterMinorVersionIsAnsweredAsHttp11) {
  Parsed p = Parse("GET / HTTP/1.7\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.version_minor, 1);
}

TEST(ReadRequest, BytesAfterTheBodyAreIgnored) {
  Parsed p = Parse("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /next HTTP/1.1\r\n\r\n");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, "ok");
}

TEST(ReadRequest, RepeatedIdenticalContentLengthIsAccepted) {
  Parsed p = Parse("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.body, "abc");
}

TEST(ReadRequest, HeadersExactlyAtTheLimit) {
  faas_limits limits{};
  limits.max_head = 64;
  std::string head = "GET / HTTP/1.1\r\nA: ";
  head += std::string(64 - head.size() - 4, 'v') + "\r\n\r\n";
  ASSERT_EQ(head.size(), 64u);
  Parsed p = Parse(head, &limits);
  EXPECT_EQ(p.status, 0) << p.err;
  p = Parse("GET / HTTP/1.1\r\nA: " + std::string(64 - 19 - 4 + 1, 'v') + "\r\n\r\n", &limits);
  EXPECT_EQ(p.status, 431) << p.err;
}

// ---- faas_read_request: malformed requests ----------------------------------------

struct BadCase {
  const char* name;
  std::string raw;
  int status;
  const char* err_part;
};

class Malformed : public testing::TestWithParam<BadCase> {};

TEST_P(Malformed, IsRefusedWithTheRightStatus) {
  const BadCase& c = GetParam();
  faas_limits limits{};
  limits.max_body = 1000;
  Parsed p = Parse(c.raw, &limits);
  EXPECT_EQ(p.status, c.status) << c.name << ": " << p.err;
  EXPECT_NE(p.err.find(c.err_part), std::string::npos) << c.name << ": " << p.err;
  EXPECT_LT(p.err.size(), static_cast<size_t>(FAAS_ERR_MAX));
}

const std::string kChunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

INSTANTIATE_TEST_SUITE_P(
    ReadRequest, Malformed,
    testing::Values(
        // request line
        BadCase{"no_version", "GET /\r\n\r\n", 400, "bad request line"},
        BadCase{"double_space", "GET  / HTTP/1.1\r\n\r\n", 400, "bad request line"},
        BadCase{"trailing_word", "GET / HTTP/1.1 x\r\n\r\n", 400, "bad request line"},
        BadCase{"bad_method", "G(T / HTTP/1.1\r\n\r\n", 400, "bad request line"},
        BadCase{"no_method", " / HTTP/1.1\r\n\r\n", 400, "bad request line"},
        BadCase{"not_http", "GET / FTP/1.1\r\n\r\n", 400, "bad HTTP version"},
        BadCase{"version_garbage", "GET / HTTP/1.1x\r\n\r\n", 400, "bad HTTP version"},
        BadCase{"http2", "GET / HTTP/2.0\r\n\r\n", 505, "not supported"},
        BadCase{"relative_target", "GET foo HTTP/1.1\r\n\r\n", 400, "bad request target"},
        BadCase{"control_in_target", "GET /a\x01 HTTP/1.1\r\n\r\n", 400, "request target"},
        BadCase{"binary_garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"s, 400,
                "bad"},
        // header fields
        BadCase{"obs_fold", "GET / HTTP/1.1\r\nA: 1\r\n  folded\r\n\r\n", 400, "folding"},
        BadCase{"no_colon", "GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "bad header field"},
        BadCase{"space_before_colon", "GET / HTTP/1.1\r\nA : 1\r\n\r\n", 400, "bad header"},
        BadCase{"empty_name", "GET / HTTP/1.1\r\n: v\r\n\r\n", 400, "bad header field"},
        BadCase{"control_in_value", "GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n", 400, "bad character"},
        BadCase{"bare_cr", "GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", 400, "CR or NUL"},
        BadCase{"nul_in_head", "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n"s, 400, "CR or NUL"},
        BadCase{"truncated_head", "GET / HTTP/1.1\r\nHost: x\r\n", 400,
                "before the end of the header fields"},
        // Content-Length
        BadCase{"cl_conflict",
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
                "conflicting Content-Length"},
        BadCase{"cl_not_number", "POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", 400,
                "bad Content-Length"},
        BadCase{"cl_negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400,
                "bad Content-Length"},
        BadCase{"cl_plus", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nabcde", 400,
                "bad Content-Length"},
        BadCase{"cl_list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nabcde", 400,
                "bad Content-Length"},
        BadCase{"cl_empty", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400,
                "empty Content-Length"},
        BadCase{"cl_over_limit", "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413,
                "over the limit of 1000"},
        BadCase{"cl_overflow",
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413,
                "over the limit"},
        BadCase{"truncated_body", "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabcd", 400,
                "after 4 of 10 body bytes"},
        BadCase{"empty_body_expected", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 400,
                "after 0 of 3 body bytes"},
        // Transfer-Encoding
        BadCase{"te_and_cl",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400,
                "both"},
        BadCase{"te_gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
                "not supported"},
        BadCase{
            "te_twice",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            501, "not supported"},
        // chunk sizes
        BadCase{"chunk_size_not_hex", kChunked + "zz\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"},
        BadCase{"chunk_size_empty", kChunked + "\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"},
        BadCase{"chunk_size_negative", kChunked + "-1\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"},
        BadCase{"chunk_size_0x", kChunked + "0x2\r\nab\r\n0\r\n\r\n", 400, "bad chunk size"},
        BadCase{"chunk_size_leading_space", kChunked + " 2\r\nab\r\n0\r\n\r\n", 400,
                "bad chunk size"},
        BadCase{"chunk_size_overflow", kChunked + "fffffffffffffffffffff\r\n", 413,
                "over the limit"},
        BadCase{"chunks_over_limit",
                kChunked + "200\r\n" + std::string(512, 'a') + "\r\n200\r\n" +
                    std::string(512, 'b') + "\r\n0\r\n\r\n",
                413, "over the limit of 1000"},
        BadCase{"chunk_too_long", kChunked + "2\r\nabc\r\n0\r\n\r\n", 400,
                "not followed by a line end"},
        BadCase{"chunk_truncated", kChunked + "10\r\nabc", 400, "in the middle of a chunk"},
        BadCase{"no_last_chunk", kChunked + "3\r\nabc\r\n", 400, "chunk size line"},
        BadCase{"no_final_crlf", kChunked + "3\r\nabc\r\n0\r\n", 400, "trailer field"},
        BadCase{"chunk_line_too_long", kChunked + "1;" + std::string(10000, 'e') + "\r\n", 400,
                "longer than"}),
    [](const testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(ReadRequest, HugeRequestLineIs414) {
  faas_limits limits{};
  limits.max_head = 4096;
  Parsed p = Parse("GET /" + std::string(10000, 'a') + " HTTP/1.1\r\n\r\n", &limits);
  EXPECT_EQ(p.status, 414) << p.err;
}

TEST(ReadRequest, HugeHeadersAre431) {
  Parsed p = Parse("GET / HTTP/1.1\r\nBig: " + std::string(100000, 'a') + "\r\n\r\n");
  EXPECT_EQ(p.status, 431) << p.err;
  EXPECT_NE(p.err.find("65536"), std::string::npos) << p.err;
}

TEST(ReadRequest, HugeHeadersNeverEndingAre431) {
  // The client keeps sending header lines: the SDK stops at the limit, not at EOF.
  std::string raw = "GET / HTTP/1.1\r\n";
  while (raw.size() < 200000) raw += "X-Filler: yes\r\n";
  Parsed p = Parse(raw, nullptr, /*keep_open=*/true);
  EXPECT_EQ(p.status, 431) << p.err;
}

TEST(ReadRequest, TooManyHeadersAre431) {
  std::string raw = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; i++) raw += "H" + std::to_string(i) + ": v\r\n";
  Parsed p = Parse(raw + "\r\n");
  EXPECT_EQ(p.status, 431) << p.err;
  faas_limits limits{};
  limits.max_headers = 200;
  p = Parse(raw + "\r\n", &limits);
  EXPECT_EQ(p.status, 0) << p.err;
}

TEST(ReadRequest, LongTrailersAre431) {
  std::string raw = kChunked + "1\r\na\r\n0\r\n";
  for (int i = 0; i < 20; i++) raw += "T: " + std::string(4000, 't') + "\r\n";
  Parsed p = Parse(raw + "\r\n");
  EXPECT_EQ(p.status, 431) << p.err;
}

TEST(ReadRequest, SlowClientTimesOutWith408) {
  faas_limits limits{};
  limits.timeout_ms = 150;
  auto start = std::chrono::steady_clock::now();
  Parsed p = Parse("GET / HTTP/1.1\r\nHost: x\r\n", &limits, /*keep_open=*/true);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(p.status, 408) << p.err;
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  p = Parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", &limits, /*keep_open=*/true);
  EXPECT_EQ(p.status, 408) << p.err;
}

TEST(ReadRequest, NothingSentIsMinusOne) {
  Parsed p = Parse("");
  EXPECT_EQ(p.status, -1);
  EXPECT_NE(p.err.find("without sending a request"), std::string::npos) << p.err;
}

TEST(ReadRequest, ErrWithNullOrZeroLengthBuffer) {
  SocketPair sp;
  shutdown(sp.peer, SHUT_WR);
  faas_request req;
  EXPECT_EQ(faas_read_request(sp.handler, &req, nullptr, nullptr, 0), -1);
}

std::string ReadExactly(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, out.data() + got, n - got);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

TEST(ReadRequest, AnswersExpect100ContinueBeforeReadingTheBody) {
  SocketPair sp;
  // The client sends the head only and waits for the interim answer, as curl does.
  std::thread client([&] {
    WriteAll(sp.peer, "PUT /up HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
    EXPECT_EQ(ReadExactly(sp.peer, 25), "HTTP/1.1 100 Continue\r\n\r\n");
    WriteAll(sp.peer, "data");
  });
  faas_request req;
  char err[FAAS_ERR_MAX] = "";
  ASSERT_EQ(faas_read_request(sp.handler, &req, nullptr, err, sizeof err), 0) << err;
  client.join();
  EXPECT_EQ(std::string(req.body, req.body_len), "data");
  faas_request_free(&req);
}

TEST(ReadRequest, NoContinueWithoutABodyToReadOrForHttp10) {
  for (const std::string& raw :
       {"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"s,
        "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"s,
        "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999999999\r\n\r\n"s}) {
    SocketPair sp;
    WriteAll(sp.peer, raw);
    shutdown(sp.peer, SHUT_WR);
    faas_request req;
    int status = faas_read_request(sp.handler, &req, nullptr, nullptr, 0);
    EXPECT_TRUE(status == 0 || status == 413) << raw;
    if (status == 0) faas_request_free(&req);
    close(sp.handler);
    sp.handler = -1;
    EXPECT_EQ(ReadToEof(sp.peer), "") << raw;
  }
}

// ---- faas_query_param ---------------------------------------------------------------

TEST(QueryParam, FindsAndDecodes) {
  faas_request req{};
  req.query = "a=1&name=Ada+L%C3%B6vel%2b&empty=&flag&n%61me2=x&bad=%zz%4";
  char out[64];
  EXPECT_EQ(faas_query_param(&req, "a", out, sizeof out), 1);
  EXPECT_STREQ(out, "1");
  EXPECT_EQ(faas_query_param(&req, "name", out, sizeof out), 11);
  EXPECT_STREQ(out, "Ada L\xc3\xb6vel+");
  EXPECT_EQ(faas_query_param(&req, "empty", out, sizeof out), 0);
  EXPECT_EQ(faas_query_param(&req, "flag", out, sizeof out), 0);
  EXPECT_EQ(faas_query_param(&req, "name2", out, sizeof out), 1);
  EXPECT_EQ(faas_query_param(&req, "bad", out, sizeof out), 5);
  EXPECT_STREQ(out, "%zz%4");
  EXPECT_EQ(faas_query_param(&req, "missing", out, sizeof out), -1);
  EXPECT_STREQ(out, "");
  EXPECT_EQ(faas_query_param(&req, "na", out, sizeof out), -1);
  EXPECT_EQ(faas_query_param(&req, "name", out, 5), -2);
  EXPECT_STREQ(out, "");
  EXPECT_EQ(faas_query_param(&req, "a", out, 2), 1);
  EXPECT_EQ(faas_query_param(&req, "a", out, 1), -2);
  req.query = "";
  EXPECT_EQ(faas_query_param(&req, "a", out, sizeof out), -1);
}

// ---- responses ----------------------------------------------------------------------

std::string Respond(int status, const char* type, const std::string& body) {
  SocketPair sp;
  EXPECT_EQ(faas_respond(sp.handler, status, type, body.data(), body.size()), 0);
  close(sp.handler);
  sp.handler = -1;
  return ReadToEof(sp.peer);
}

TEST(Respond, WritesACompleteResponse) {
  EXPECT_EQ(Respond(200, "text/plain", "hi\n"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\nhi\n");
  EXPECT_EQ(Respond(404, nullptr, ""),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(Respond(599, nullptr, "").substr(0, 21), "HTTP/1.1 599 Unknown\r");
}

TEST(Respond, BigBody) {
  std::string body(5 << 20, 'z');
  SocketPair sp;
  std::string got;
  std::thread reader([&] { got = ReadToEof(sp.peer); });
  EXPECT_EQ(faas_respond(sp.handler, 200, "application/octet-stream", body.data(), body.size()), 0);
  close(sp.handler);
  sp.handler = -1;
  reader.join();
  Response r = ParseResponse(got);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["Content-Length"], std::to_string(body.size()));
  EXPECT_EQ(r.body, body);
}

TEST(Respond, CustomHeadersAndNoContent) {
  SocketPair sp;
  faas_header headers[] = {{"Content-Type", "application/json"}, {"X-Id", "42"}};
  EXPECT_EQ(faas_respond_headers(sp.handler, 201, headers, 2, "{}", 2), 0);
  EXPECT_EQ(faas_respond_headers(sp.handler, 204, nullptr, 0, "ignored", 7), 0);
  close(sp.handler);
  sp.handler = -1;
  EXPECT_EQ(ReadToEof(sp.peer),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Id: 42\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
}

TEST(Respond, RefusesHeaderInjectionAndBadStatus) {
  SocketPair sp;
  faas_header injected[] = {{"X-A", "v\r\nSet-Cookie: evil=1"}};
  errno = 0;
  EXPECT_EQ(faas_respond_headers(sp.handler, 200, injected, 1, "", 0), -1);
  EXPECT_EQ(errno, EINVAL);
  faas_header bad_name[] = {{"X A", "v"}};
  EXPECT_EQ(faas_respond_headers(sp.handler, 200, bad_name, 1, "", 0), -1);
  faas_header empty_name[] = {{"", "v"}};
  EXPECT_EQ(faas_respond_headers(sp.handler, 200, empty_name, 1, "", 0), -1);
  EXPECT_EQ(faas_respond(sp.handler, 100, nullptr, "", 0), -1);
  EXPECT_EQ(faas_respond(sp.handler, 600, nullptr, "", 0), -1);
  EXPECT_EQ(faas_respond(sp.handler, 200, "a\nb", "", 0), -1);
  close(sp.handler);
  sp.handler = -1;
  EXPECT_EQ(ReadToEof(sp.peer), "");  // nothing was written
}

TEST(Respond, ErrorAnswerCarriesTheMessage) {
  SocketPair sp;
  EXPECT_EQ(faas_respond_error(sp.handler, 413, "too big"), 0);
  EXPECT_EQ(faas_respond_error(sp.handler, 500, nullptr), 0);
  close(sp.handler);
  sp.handler = -1;
  std::string raw = ReadToEof(sp.peer);
  Response r = ParseResponse(raw);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.headers["Content-Type"], "text/plain; charset=utf-8");
  EXPECT_EQ(r.headers["Content-Length"], "8");
  EXPECT_EQ(r.body.substr(0, 8), "too big\n");
  EXPECT_NE(raw.find("\r\n\r\nInternal Server Error\n"), std::string::npos);
}

TEST(Respond, ClientGoneIsAnErrorNotSigpipe) {
  SocketPair sp;
  close(sp.peer);
  sp.peer = -1;
  std::string body(1 << 20, 'x');
  errno = 0;
  EXPECT_EQ(faas_respond(sp.handler, 200, "text/plain", body.data(), body.size()), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Respond, ReasonPhrases) {
  EXPECT_STREQ(faas_reason(200), "OK");
  EXPECT_STREQ(faas_reason(431), "Request Header Fields Too Large");
  EXPECT_STREQ(faas_reason(299), "Unknown");
}

TEST(Close, AnswersAreNotLostWhenTheBodyWasNotRead) {
  // A handler that refuses a big upload without reading it must not lose its answer to a
  // connection reset: faas_close() drains what the client still sends. Over real TCP.
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener);
  std::string upload =
      "POST / HTTP/1.1\r\nContent-Length: 600000\r\n\r\n" + std::string(600000, 'u');
  std::thread sender([&] { WriteAll(client, upload); });
  faas_limits limits{};
  limits.max_body = 1000;
  faas_request req;
  char err[FAAS_ERR_MAX];
  int status = faas_read_request(server, &req, &limits, err, sizeof err);
  EXPECT_EQ(status, 413);
  EXPECT_EQ(faas_respond_error(server, status, err), 0);
  std::thread closer([&] { faas_close(server); });
  sender.join();
  Response r = ParseResponse(ReadToEof(client));
  close(client);
  closer.join();
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("over the limit of 1000 bytes"), std::string::npos) << r.body;
}

// ---- faas_accept --------------------------------------------------------------------

struct Accepted {
  int fd = -1;
  int error = 0;  // errno after a failure
  std::string err;
};

Accepted AcceptWith(FakeControl& control, const std::string& payload, std::vector<int> fds) {
  ScopedEnv env("FAAS_CONTROL_SOCKET", control.path().c_str());
  bool passed = false;
  std::thread faasd([&] { passed = control.Pass(payload, fds); });
  Accepted a;
  char err[FAAS_ERR_MAX] = "";
  a.fd = faas_accept(err, sizeof err);
  a.error = errno;
  a.err = err;
  faasd.join();
  EXPECT_TRUE(passed);
  return a;
}

TEST(Accept, ReceivesTheClientSocket) {
  FakeControl control;
  SocketPair client;
  Accepted a = AcceptWith(control, "SOCKET", {client.handler});
  ASSERT_GE(a.fd, 0) << a.err;
  EXPECT_NE(a.fd, client.handler);
  EXPECT_EQ(fcntl(a.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_EQ(fcntl(a.fd, F_GETFL) & O_NONBLOCK, 0);
  WriteAll(a.fd, "through");
  close(a.fd);
  close(client.handler);
  client.handler = -1;
  EXPECT_EQ(ReadToEof(client.peer), "through");
}

// The fd in this process that is connected to the unix socket at `path`, or -1.
int FdConnectedTo(const std::string& path) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    int fd = std::stoi(entry.path().filename().string());
    sockaddr_un peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
        peer.sun_family == AF_UNIX && len > offsetof(sockaddr_un, sun_path) &&
        path == peer.sun_path) {
      return fd;
    }
  }
  return -1;
}

// With a warm pool a handler connects long before faasd has a client for it: the wait
// must have no timeout (faasd alone ends a container it no longer needs).
TEST(Accept, WaitsWithoutATimeoutForALateClient) {
  FakeControl control;
  SocketPair client;
  ScopedEnv env("FAAS_CONTROL_SOCKET", control.path().c_str());
  std::atomic<bool> returned = false;
  timeval receive_timeout{-1, -1};
  bool passed = false;
  std::thread faasd([&] {
    passed = control.Pass("SOCKET", {client.handler}, [&] {
      int waiting = FdConnectedTo(control.path());
      socklen_t len = sizeof receive_timeout;
      if (waiting >= 0) getsockopt(waiting, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, &len);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      EXPECT_FALSE(returned) << "faas_accept() returned before the client came";
    });
  });
  char err[FAAS_ERR_MAX] = "";
  int fd = faas_accept(err, sizeof err);
  returned = true;
  faasd.join();
  EXPECT_TRUE(passed);
  EXPECT_EQ(receive_timeout.tv_sec, 0);
  EXPECT_EQ(receive_timeout.tv_usec, 0);
  ASSERT_GE(fd, 0) << err;
  WriteAll(fd, "late");
  close(fd);
  close(client.handler);
  client.handler = -1;
  EXPECT_EQ(ReadToEof(client.peer), "late");
}

TEST(Accept, MakesANonBlockingSocketBlocking) {
  FakeControl control;
  SocketPair client;
  fcntl(client.handler, F_SETFL, O_NONBLOCK);
  Accepted a = AcceptWith(control, "SOCKET", {client.handler});
  ASSERT_GE(a.fd, 0) << a.err;
  EXPECT_EQ(fcntl(a.fd, F_GETFL) & O_NONBLOCK, 0);
  close(a.fd);
}

TEST(Accept, RefusesAWrongPayloadAndClosesTheFds) {
  FakeControl control;
  SocketPair client;
  int before = CountOpenFds();
  Accepted a = AcceptWith(control, "SOCKEX", {client.handler});
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.err.find("unexpected message"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("6 bytes and 1 fds"), std::string::npos) << a.err;
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(Accept, RefusesTwoFds) {
  FakeControl control;
  SocketPair one, two;
  int before = CountOpenFds();
  Accepted a = AcceptWith(control, "SOCKET", {one.handler, two.handler});
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.err.find("2 fds"), std::string::npos) << a.err;
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(Accept, RefusesAPayloadWithoutFd) {
  FakeControl control;
  Accepted a = AcceptWith(control, "SOCKET", {});
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.err.find("0 fds"), std::string::npos) << a.err;
}

TEST(Accept, ReportsAControlSocketClosedWithoutAnything) {
  FakeControl control;
  Accepted a = AcceptWith(control, "", {});
  EXPECT_EQ(a.fd, -1);
  EXPECT_NE(a.err.find("closed without passing a client socket"), std::string::npos) << a.err;
}

TEST(Accept, ExplainsAMissingControlSocket) {
  ScopedEnv env("FAAS_CONTROL_SOCKET", "/nonexistent/faas-test/control.sock");
  char err[FAAS_ERR_MAX];
  EXPECT_EQ(faas_accept(err, sizeof err), -1);
  EXPECT_NE(std::string(err).find("cannot connect to the control socket "
                                  "/nonexistent/faas-test/control.sock: No such file"),
            std::string::npos)
      << err;
  EXPECT_NE(std::string(err).find("faas-local-run"), std::string::npos) << err;
}

TEST(Accept, DefaultsToSlashControlSock) {
  ScopedEnv env("FAAS_CONTROL_SOCKET", nullptr);
  char err[FAAS_ERR_MAX];
  if (access("/control.sock", F_OK) == 0) GTEST_SKIP() << "this machine has a /control.sock";
  EXPECT_EQ(faas_accept(err, sizeof err), -1);
  EXPECT_NE(std::string(err).find(" /control.sock:"), std::string::npos) << err;
}

TEST(Accept, RefusesAPathTooLongForAUnixSocket) {
  std::string path = "/tmp/" + std::string(200, 'p');
  ScopedEnv env("FAAS_CONTROL_SOCKET", path.c_str());
  char err[FAAS_ERR_MAX];
  EXPECT_EQ(faas_accept(err, sizeof err), -1);
  EXPECT_NE(std::string(err).find("too long"), std::string::npos) << err;
}

// ---- faas_serve ---------------------------------------------------------------------

int EchoPath(int client, const faas_request* req, void* ctx) {
  ++*static_cast<int*>(ctx);
  std::string body = std::string(req->method) + " " + req->path + " " + req->body;
  return faas_respond(client, 200, "text/plain", body.data(), body.size()) == 0 ? 7 : 1;
}

std::pair<int, std::string> Serve(const std::string& request, int* calls) {
  FakeControl control;
  SocketPair client;
  ScopedEnv env("FAAS_CONTROL_SOCKET", control.path().c_str());
  std::thread faasd([&] {
    EXPECT_TRUE(control.Pass("SOCKET", {client.handler}));
    WriteAll(client.peer, request);
    shutdown(client.peer, SHUT_WR);
  });
  int rc = faas_serve(EchoPath, nullptr, calls);
  faasd.join();
  close(client.handler);
  client.handler = -1;
  return {rc, ReadToEof(client.peer)};
}

TEST(Serve, CallsTheHandlerAndReturnsItsStatus) {
  int calls = 0;
  auto [rc, raw] = Serve("POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", &calls);
  EXPECT_EQ(rc, 7);
  EXPECT_EQ(calls, 1);
  Response r = ParseResponse(raw);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /x hi");
}

TEST(Serve, AnswersAMalformedRequestItself) {
  int calls = 0;
  auto [rc, raw] = Serve("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", &calls);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(calls, 0);
  Response r = ParseResponse(raw);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "bad chunk size \"xyz\"\n");
}

TEST(Serve, WithoutFaasdReturnsOne) {
  ScopedEnv env("FAAS_CONTROL_SOCKET", "/nonexistent/control.sock");
  int calls = 0;
  testing::internal::CaptureStderr();
  EXPECT_EQ(faas_serve(EchoPath, nullptr, &calls), 1);
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(calls, 0);
  EXPECT_NE(log.find("faas: cannot connect to the control socket"), std::string::npos) << log;
}

TEST(Reuse, FaasReuseIsACountOfAtLeastOne) {
  const std::vector<std::pair<const char*, int>> cases = {
      {nullptr, 1},     {"", 1},
      {"1", 1},         {"3", 3},
      {"10000", 10000}, {"0", 1},
      {"-3", 1},        {"+3", 1},
      {" 3", 1},        {"3 ", 1},
      {"3x", 1},        {"abc", 1},
      {"0x10", 1},      {"99999999999999999999", 1}};
  for (const auto& [value, uses] : cases) {
    ScopedEnv env("FAAS_REUSE", value);
    errno = EINTR;
    EXPECT_EQ(faas_reuse(), uses) << (value != nullptr ? value : "unset");
    EXPECT_EQ(errno, EINTR);
  }
}

// What the handler of NumberedAnswer saw and what it returns, call by call.
struct Calls {
  std::vector<int> statuses;  // what the n-th call returns (0 past the end)
  std::vector<int> open_fds;  // CountOpenFds() in each call
};

int NumberedAnswer(int client, const faas_request* req, void* ctx) {
  auto* calls = static_cast<Calls*>(ctx);
  size_t n = calls->open_fds.size();
  calls->open_fds.push_back(CountOpenFds());
  std::string body = "request " + std::to_string(n + 1) + " " + req->path + " " +
                     std::string(req->body, req->body_len);
  if (faas_respond(client, 200, "text/plain", body.data(), body.size()) != 0) return 1;
  return n < calls->statuses.size() ? calls->statuses[n] : 0;
}

// How the fake faasd ends after its last client.
enum class End {
  kKeepListening,  // as if more clients might come: a reconnect would wait
  kStopListening,  // as faasd does after the container's last client: ECONNREFUSED
  kRemoveSocket,   // ENOENT
  kHangUp,         // accepts the next connect and closes it without a client
};

struct ReuseRun {
  int rc = -1;
  std::vector<std::string> answers;  // the body of each client's answer
  std::string log;                   // faas_serve()'s stderr
  bool reconnected = false;          // a connect waited after faas_serve() returned
};

// faas_serve() with FAAS_REUSE=`reuse` against a fake faasd that hands it `clients`
// clients one after the other, each once the previous one has its answer.
ReuseRun ServeReused(const char* reuse, int clients, End end, Calls* calls) {
  FakeControl control;
  ScopedEnv env("FAAS_CONTROL_SOCKET", control.path().c_str());
  ScopedEnv reuse_env("FAAS_REUSE", reuse);
  ReuseRun run;
  std::thread faasd([&] {
    for (int i = 0; i < clients; i++) {
      SocketPair client;
      if (!control.Pass("SOCKET", {client.handler})) {
        ADD_FAILURE() << "faas_serve() did not connect for client " << i + 1;
        return;
      }
      // Before the request: faas_serve() cannot reconnect before this.
      if (i + 1 == clients && end == End::kStopListening) control.StopListening();
      if (i + 1 == clients && end == End::kRemoveSocket) control.Remove();
      close(client.handler);
      client.handler = -1;
      std::string body = "b" + std::to_string(i + 1);
      WriteAll(client.peer, "POST /" + std::to_string(i + 1) + " HTTP/1.1\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body);
      shutdown(client.peer, SHUT_WR);
      run.answers.push_back(ParseResponse(ReadToEof(client.peer)).body);
    }
    if (end == End::kHangUp) {
      EXPECT_TRUE(control.Pass("", {}));
    }
  });
  testing::internal::CaptureStderr();
  run.rc = faas_serve(NumberedAnswer, nullptr, calls);
  run.log = testing::internal::GetCapturedStderr();
  faasd.join();
  run.reconnected = control.HasPendingConnect();
  return run;
}

TEST(Reuse, ServesThreeClientsInTurnWithFaasReuse3) {
  Calls calls;
  calls.statuses = {1, 0, 7};
  int fds_before = CountOpenFds();
  ReuseRun run = ServeReused("3", 3, End::kKeepListening, &calls);
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(run.rc, 7);  // the last client's status
  EXPECT_EQ(run.answers,
            (std::vector<std::string>{"request 1 /1 b1", "request 2 /2 b2", "request 3 /3 b3"}));
  EXPECT_FALSE(run.reconnected) << "connected again after its third client";
  EXPECT_EQ(run.log, "");
  // No client is kept open into the next request.
  ASSERT_EQ(calls.open_fds.size(), 3u);
  EXPECT_EQ(calls.open_fds[1], calls.open_fds[0]);
  EXPECT_EQ(calls.open_fds[2], calls.open_fds[0]);
}

TEST(Reuse, StopsQuietlyWhenFaasdStopsListening) {
  Calls calls;
  calls.statuses = {7};
  ReuseRun run = ServeReused("3", 1, End::kStopListening, &calls);
  EXPECT_EQ(run.rc, 7);
  EXPECT_EQ(run.answers, (std::vector<std::string>{"request 1 /1 b1"}));
  EXPECT_EQ(run.log, "");
}

TEST(Reuse, StopsQuietlyWhenTheControlSocketIsGone) {
  Calls calls;
  ReuseRun run = ServeReused("5", 2, End::kRemoveSocket, &calls);
  EXPECT_EQ(run.rc, 0);
  EXPECT_EQ(run.answers.size(), 2u);
  EXPECT_EQ(run.log, "");
}

TEST(Reuse, WithoutFaasReuseServesOneAndNeverReconnects) {
  for (const char* reuse : {static_cast<const char*>(nullptr), "1", "0", "-2", "many"}) {
    Calls calls;
    calls.statuses = {4};
    ReuseRun run = ServeReused(reuse, 1, End::kKeepListening, &calls);
    EXPECT_EQ(run.rc, 4);
    EXPECT_EQ(run.answers, (std::vector<std::string>{"request 1 /1 b1"}));
    EXPECT_FALSE(run.reconnected) << (reuse != nullptr ? reuse : "unset");
    EXPECT_EQ(run.log, "");
  }
}

TEST(Reuse, AControlSocketClosedWithoutAClientIsAFailure) {
  Calls calls;
  ReuseRun run = ServeReused("3", 1, End::kHangUp, &calls);
  EXPECT_EQ(run.rc, 1);
  EXPECT_NE(run.log.find("faas: the control socket"), std::string::npos) << run.log;
  EXPECT_NE(run.log.find("closed without passing a client socket"), std::string::npos) << run.log;
}

// Many clients through one process keep neither fds nor memory (the sanitizer build
// checks the latter).
TEST(Reuse, ManyClientsLeakNothing) {
  Calls calls;
  int fds_before = CountOpenFds();
  ReuseRun run = ServeReused("300", 300, End::kKeepListening, &calls);
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(run.rc, 0);
  ASSERT_EQ(run.answers.size(), 300u);
  EXPECT_EQ(run.answers[299], "request 300 /300 b300");
  ASSERT_EQ(calls.open_fds.size(), 300u);
  EXPECT_EQ(calls.open_fds.back(), calls.open_fds.front());
  EXPECT_FALSE(run.reconnected);
  EXPECT_EQ(run.log, "");
}

TEST(Accept, SetsErrnoSoACallerTellsTheEndFromAFailure) {
  {
    FakeControl control;
    ScopedEnv env("FAAS_CONTROL_SOCKET", control.path().c_str());
    control.StopListening();
    errno = 0;
    EXPECT_EQ(faas_accept(nullptr, 0), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
    control.Remove();
    errno = 0;
    EXPECT_EQ(faas_accept(nullptr, 0), -1);
    EXPECT_EQ(errno, ENOENT);
  }
  FakeControl control;
  Accepted a = AcceptWith(control, "", {});
  EXPECT_EQ(a.fd, -1);
  EXPECT_EQ(a.error, EPROTO);
}

// ---- faas-stdio -----------------------------------------------------------------------

TEST(FaasStdio, IsStaticallyLinked) {
#ifdef FAAS_STDIO_DYNAMIC
  GTEST_SKIP() << "sanitizer builds link faas-stdio dynamically";
#else
  std::ifstream f(FAAS_STDIO_BIN, std::ios::binary);
  ASSERT_TRUE(f) << FAAS_STDIO_BIN;
  Elf64_Ehdr eh;
  f.read(reinterpret_cast<char*>(&eh), sizeof eh);
  ASSERT_EQ(std::memcmp(eh.e_ident, ELFMAG, SELFMAG), 0);
  for (int i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    f.seekg(static_cast<std::streamoff>(eh.e_phoff + static_cast<size_t>(i) * eh.e_phentsize));
    f.read(reinterpret_cast<char*>(&ph), sizeof ph);
    EXPECT_NE(ph.p_type, static_cast<Elf64_Word>(PT_INTERP)) << "faas-stdio needs a loader";
    EXPECT_NE(ph.p_type, static_cast<Elf64_Word>(PT_DYNAMIC)) << "faas-stdio is dynamic";
  }
#endif
}

struct ShimRun {
  int exit_status = -1;
  Response response;  // to the last request
  std::string raw;
  std::string log;                  // the shim's stderr
  std::vector<Response> responses;  // to each request
};

// Runs faas-stdio with `args` under a fake faasd and sends it `requests`, each on a client
// of its own handed over once the previous one has its answer, `handover_delay` after
// faas-stdio connected; then stops listening, as faasd does after a container's last client.
ShimRun RunShimClients(const std::vector<std::string>& args,
                       const std::vector<std::string>& requests,
                       const std::vector<std::string>& extra_env = {},
                       std::chrono::milliseconds handover_delay = {}) {
  FakeControl control;
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; e++) {
    if (std::strncmp(*e, "FAAS_", 5) != 0) env_strings.emplace_back(*e);
  }
  env_strings.push_back("FAAS_CONTROL_SOCKET=" + control.path());
  for (const auto& e : extra_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {FAAS_STDIO_BIN};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int log_pipe[2];
  EXPECT_EQ(pipe2(log_pipe, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, log_pipe[1], 2);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(log_pipe[1]);
  ShimRun run;
  std::thread log_reader([&] { run.log = ReadToEof(log_pipe[0]); });

  for (size_t i = 0; i < requests.size(); i++) {
    SocketPair client;
    EXPECT_TRUE(control.Pass("SOCKET", {client.handler},
                             [&] { std::this_thread::sleep_for(handover_delay); }));
    if (i + 1 == requests.size()) control.StopListening();
    close(client.handler);
    client.handler = -1;
    std::thread writer([&] {
      WriteAll(client.peer, requests[i]);
      shutdown(client.peer, SHUT_WR);
    });
    run.raw = ReadToEof(client.peer);
    writer.join();
    run.responses.push_back(ParseResponse(run.raw));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  run.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  log_reader.join();
  close(log_pipe[0]);
  run.response = ParseResponse(run.raw);
  return run;
}

ShimRun RunShim(const std::vector<std::string>& args, const std::string& request,
                const std::vector<std::string>& extra_env = {},
                std::chrono::milliseconds handover_delay = {}) {
  return RunShimClients(args, {request}, extra_env, handover_delay);
}

TEST(FaasStdio, RunsAProgramOnTheBody) {
  ShimRun r = RunShim({"wc", "-c"}, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(r.exit_status, 0) << r.log;
  EXPECT_EQ(r.response.status, 200) << r.raw;
  EXPECT_EQ(r.response.headers["Content-Type"], "text/plain; charset=utf-8");
  EXPECT_EQ(r.response.body, "5\n");
}

TEST(FaasStdio, ChunkedBodyAndBigOutput) {
  ShimRun r = RunShim({"/bin/sh", "-c", "cat; head -c 3000000 /dev/zero"},
                      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  EXPECT_EQ(r.response.status, 200) << r.log;
  ASSERT_EQ(r.response.body.size(), 3000003u);
  EXPECT_EQ(r.response.body.substr(0, 4), "abc"s + '\0');
}

TEST(FaasStdio, PassesCgiVariables) {
  ShimRun r = RunShim(
      {"/usr/bin/env"},
      "POST /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: fn\r\nContent-Type: text/csv\r\n"
      "Content-Length: 3\r\nX-Custom-Thing: v1\r\nx-custom-thing: v2\r\nProxy: http://evil\r\n"
      "X_Under: no\r\n\r\nabc",
      {"HTTP_STALE=from-image", "REQUEST_METHOD=stale", "KEEP_ME=1"});
  ASSERT_EQ(r.response.status, 200) << r.log;
  std::map<std::string, std::string> env;
  std::istringstream lines(r.response.body);
  for (std::string line; std::getline(lines, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  EXPECT_EQ(env["GATEWAY_INTERFACE"], "CGI/1.1");
  EXPECT_EQ(env["SERVER_PROTOCOL"], "HTTP/1.1");
  EXPECT_EQ(env["REQUEST_METHOD"], "POST");
  EXPECT_EQ(env["REQUEST_URI"], "/a%20b/c?x=1&y=%20");
  EXPECT_EQ(env["PATH_INFO"], "/a b/c");
  EXPECT_EQ(env["QUERY_STRING"], "x=1&y=%20");
  EXPECT_EQ(env["CONTENT_TYPE"], "text/csv");
  EXPECT_EQ(env["CONTENT_LENGTH"], "3");
  EXPECT_EQ(env["HTTP_HOST"], "fn");
  EXPECT_EQ(env["HTTP_X_CUSTOM_THING"], "v1, v2");
  EXPECT_EQ(env["KEEP_ME"], "1");
  EXPECT_EQ(env.count("HTTP_PROXY"), 0u);
  EXPECT_EQ(env.count("HTTP_X_UNDER"), 0u);
  EXPECT_EQ(env.count("HTTP_STALE"), 0u);
  EXPECT_EQ(env.count("HTTP_CONTENT_TYPE"), 0u);
  EXPECT_EQ(env.count("HTTP_CONTENT_LENGTH"), 0u);
  EXPECT_EQ(env.count("REMOTE_ADDR"), 0u);  // a unix socket pair has no address
}

TEST(FaasStdio, GetHasNoContentLength) {
  ShimRun r = RunShim({"/bin/sh", "-c", "echo \"[${CONTENT_LENGTH-unset}] $REQUEST_METHOD\""},
                      "GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.response.body, "[unset] GET\n");
}

TEST(FaasStdio, FailingProgramIs500WithStderrLogged) {
  ShimRun r =
      RunShim({"/bin/sh", "-c", "echo partial; echo oops >&2; exit 3"}, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_EQ(r.response.status, 500) << r.raw;
  EXPECT_EQ(r.response.body, "/bin/sh exited with status 3\n");
  EXPECT_NE(r.log.find("oops\n"), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("faas-stdio: /bin/sh exited with status 3"), std::string::npos) << r.log;
}

TEST(FaasStdio, KilledProgramIs500) {
  ShimRun r = RunShim({"/bin/sh", "-c", "kill -9 $$"}, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.response.status, 500);
  EXPECT_EQ(r.response.body, "/bin/sh was killed by signal 9\n");
}

TEST(FaasStdio, MissingProgramIs500) {
  ShimRun r = RunShim({"/nonexistent/program"}, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.response.status, 500);
  EXPECT_EQ(r.response.body, "cannot run /nonexistent/program: No such file or directory\n");
}

TEST(FaasStdio, NoProgramIs500) {
  ShimRun r = RunShim({}, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_EQ(r.response.status, 500);
  EXPECT_NE(r.response.body.find("no program given"), std::string::npos);
}

TEST(FaasStdio, SlowProgramIs504) {
  auto start = std::chrono::steady_clock::now();
  ShimRun r =
      RunShim({"/bin/sleep", "20"}, "GET / HTTP/1.1\r\n\r\n", {"FAAS_STDIO_TIMEOUT_MS=300"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(r.response.status, 504);
  EXPECT_EQ(r.response.body, "/bin/sleep did not finish within 300 ms\n");
}

// A pooled faas-stdio may start long before its client: FAAS_TIMEOUT_MS (here 600, so
// 500 ms for the program) counts from the hand-over, not from the start.
TEST(FaasStdio, RunTimeoutCountsFromTheHandOver) {
  ShimRun r = RunShim({"/bin/echo", "in time"}, "GET / HTTP/1.1\r\n\r\n", {"FAAS_TIMEOUT_MS=600"},
                      std::chrono::milliseconds(1000));
  EXPECT_EQ(r.exit_status, 0) << r.log;
  EXPECT_EQ(r.response.status, 200) << r.raw;
  EXPECT_EQ(r.response.body, "in time\n");
}

TEST(FaasStdio, TooMuchOutputIs500) {
  ShimRun r =
      RunShim({"/bin/sh", "-c", "yes"}, "GET / HTTP/1.1\r\n\r\n", {"FAAS_STDIO_MAX_OUTPUT=100000"});
  EXPECT_EQ(r.response.status, 500);
  EXPECT_EQ(r.response.body, "/bin/sh wrote more than 100000 bytes\n");
}

TEST(FaasStdio, ProgramIgnoringABigBody) {
  ShimRun r =
      RunShim({"/bin/echo", "ignored"},
              "POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + std::string(2000000, 'b'));
  EXPECT_EQ(r.response.status, 200) << r.log;
  EXPECT_EQ(r.response.body, "ignored\n");
}

TEST(FaasStdio, BigBodyThroughAProgram) {
  std::string body(3000000, 'q');
  ShimRun r = RunShim({"/bin/cat"}, "POST / HTTP/1.1\r\nContent-Length: 3000000\r\n\r\n" + body);
  EXPECT_EQ(r.response.status, 200) << r.log;
  EXPECT_EQ(r.response.body, body);
}

TEST(FaasStdio, BodyOverTheLimitIs413WithoutRunningTheProgram) {
  ShimRun r = RunShim({"/bin/sh", "-c", "echo ran >&2"},
                      "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
                      {"FAAS_STDIO_MAX_BODY=10"});
  EXPECT_EQ(r.response.status, 413);
  EXPECT_EQ(r.log.find("ran"), std::string::npos) << r.log;
  EXPECT_EQ(r.exit_status, 0);
}

TEST(FaasStdio, MalformedRequestIs400WithoutRunningTheProgram) {
  ShimRun r = RunShim({"/bin/sh", "-c", "echo ran >&2"}, "NOT HTTP\r\n\r\n");
  EXPECT_EQ(r.response.status, 400);
  EXPECT_EQ(r.log.find("ran"), std::string::npos) << r.log;
}

TEST(FaasStdio, ContentTypeSetting) {
  ShimRun r = RunShim({"/bin/echo", "{}"}, "GET / HTTP/1.1\r\n\r\n",
                      {"FAAS_STDIO_CONTENT_TYPE=application/json"});
  EXPECT_EQ(r.response.headers["Content-Type"], "application/json");
}

// With FAAS_REUSE one faas-stdio serves clients in turn, running the program afresh for
// each, and stops quietly when faasd stops listening.
TEST(FaasStdio, ServesClientsInTurnWithFaasReuse) {
  const std::string script = "test \"$PATH_INFO\" != /fail || exit 3; echo \"$PATH_INFO $$\"";
  ShimRun r = RunShimClients(
      {"/bin/sh", "-c", script},
      {"GET /a HTTP/1.1\r\n\r\n", "GET /fail HTTP/1.1\r\n\r\n", "GET /c HTTP/1.1\r\n\r\n"},
      {"FAAS_REUSE=5"});
  EXPECT_EQ(r.exit_status, 0) << r.log;  // the last client's
  ASSERT_EQ(r.responses.size(), 3u);
  EXPECT_EQ(r.responses[0].status, 200);
  EXPECT_EQ(r.responses[0].body.rfind("/a ", 0), 0u) << r.responses[0].body;
  EXPECT_EQ(r.responses[1].status, 500);
  EXPECT_EQ(r.responses[2].status, 200);
  EXPECT_EQ(r.responses[2].body.rfind("/c ", 0), 0u) << r.responses[2].body;
  EXPECT_NE(r.responses[0].body.substr(3), r.responses[2].body.substr(3));  // the program's pid
  EXPECT_EQ(r.log.find("cannot connect"), std::string::npos) << r.log;
}

TEST(FaasStdio, ExitStatusIsTheLastClients) {
  ShimRun r =
      RunShimClients({"/bin/sh", "-c", "test \"$PATH_INFO\" != /fail"},
                     {"GET /ok HTTP/1.1\r\n\r\n", "GET /fail HTTP/1.1\r\n\r\n"}, {"FAAS_REUSE=2"});
  EXPECT_EQ(r.exit_status, 1);
  ASSERT_EQ(r.responses.size(), 2u);
  EXPECT_EQ(r.responses[0].status, 200);
  EXPECT_EQ(r.responses[1].status, 500);
}

TEST(FaasStdio, Help) {
  std::string cmd = std::string(FAAS_STDIO_BIN) + " --help";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf, p);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_EQ(std::string(buf, n).rfind("usage: faas-stdio PROGRAM", 0), 0u);
}

}  // namespace
