#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <thread>

#include "api/handlers.h"
#include "api/push_route.h"

namespace faas::api {
namespace {

using boost::beast::http::verb;

class FakeBackend : public Backend {
 public:
  Result<UniqueFd> StartDeploy(const std::string&, const std::string&,
                               std::shared_ptr<const DeployCancel>, DeployDone) override {
    return MakeError(Errc::kInternal, "not used");
  }
  Result<nlohmann::json> Describe(const std::string& name) override {
    if (name != "hello") return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    return nlohmann::json{{"name", name}, {"cmd", {"/handler"}}};
  }
  Result<nlohmann::json> GetIp(const std::string& name) override {
    if (name != "hello") return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    return nlohmann::json{{"name", name}, {"ip", "10.0.0.10"}};
  }
  nlohmann::json List() override { return {{"hello", {{"ip", "10.0.0.10"}}}}; }
  Result<nlohmann::json> Remove(const std::string& name) override {
    removed.push_back(name);
    if (name == "busy") return MakeError(Errc::kConflict, "a deploy of 'busy' is under way");
    return nlohmann::json{{"name", name}};
  }
  Result<nlohmann::json> Versions(const std::string& name) override {
    if (name != "hello") return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    return nlohmann::json{{"name", name}, {"serving", 2}};
  }
  Result<nlohmann::json> Rollback(const std::string& name,
                                  std::optional<uint64_t> version) override {
    rollbacks.emplace_back(name, version);
    if (name == "busy") return MakeError(Errc::kConflict, "a deploy of 'busy' is under way");
    return nlohmann::json{{"name", name}, {"version", version.value_or(1)}};
  }
  std::vector<std::string> Degraded() override { return degraded; }
  Result<LogAnswer> Logs(const std::string& name, const logs::LogQuery& query,
                         logs::LogFollower* follower) override {
    if (name != "hello") return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    LogAnswer answer{.records = "{\"line\":\"old\"}\n", .subscription = nullptr};
    if (query.tail == 0u) answer.records.clear();
    if (follower) {
      this->follower = follower;
      answer.subscription = std::make_shared<int>(0);
      subscription = answer.subscription;
    }
    return answer;
  }
  logs::LogFollower* follower = nullptr;
  std::weak_ptr<void> subscription;
  nlohmann::json Version() override { return {{"version", "9.9.9"}, {"api", 1}}; }
  std::optional<std::string> Metrics() override { return metrics; }
  std::optional<std::string> metrics = "faasd_functions_deployed 1\n";
  std::vector<std::pair<std::string, std::optional<uint64_t>>> rollbacks;
  std::vector<std::string> removed;
  std::vector<std::string> degraded;
};

// A reply whose answer comes later, once the backend has answered (the fake answers at
// once).
Reply Settle(Reply reply) {
  if (!reply.later) return reply;
  std::optional<Reply> answered;
  reply.later([&](Result<nlohmann::json> result) { answered = ReplyFor(std::move(result)); });
  EXPECT_TRUE(answered.has_value());
  return answered ? *answered : Reply{.status = 0};
}

TEST(ApiRouteTest, Healthz) {
  FakeBackend backend;
  Reply r = Route(backend, verb::get, "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["status"], "ok");
}

TEST(ApiRouteTest, HealthzDegradedIs503WithTheReasons) {
  FakeBackend backend;
  backend.degraded = {"listener of hello paused: Too many open files"};
  Reply r = Route(backend, verb::get, "/healthz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body["status"], "degraded");
  EXPECT_EQ(r.body["reasons"], nlohmann::json::array({backend.degraded[0]}));
}

TEST(ApiRouteTest, VersionsOfAFunction) {
  FakeBackend backend;
  Reply r = Route(backend, verb::get, "/api/functions/hello/versions");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["serving"], 2);
  EXPECT_EQ(Route(backend, verb::get, "/api/functions/nope/versions").status, 404);
  EXPECT_EQ(Route(backend, verb::post, "/api/functions/hello/versions").status, 405);
}

TEST(ApiRouteTest, RollbackWithAndWithoutAVersion) {
  FakeBackend backend;
  EXPECT_EQ(Settle(Route(backend, verb::post, "/api/functions/hello/rollback")).status, 200);
  Reply r = Settle(Route(backend, verb::post, "/api/functions/hello/rollback?version=3"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["version"], 3);
  EXPECT_EQ(Settle(Route(backend, verb::post, "/api/functions/busy/rollback")).status, 409);
  ASSERT_EQ(backend.rollbacks.size(), 3u);
  EXPECT_EQ(backend.rollbacks[0].second, std::nullopt);
  EXPECT_EQ(backend.rollbacks[1].second, std::optional<uint64_t>(3));
  EXPECT_EQ(Route(backend, verb::get, "/api/functions/hello/rollback").status, 405);
}

TEST(ApiRouteTest, RollbackToABadVersionIs400WithoutCallingTheBackend) {
  FakeBackend backend;
  for (const char* query :
       {"?version=0", "?version=x", "?version=", "?version=-1", "?version=1x"}) {
    Reply r =
        Settle(Route(backend, verb::post, std::string("/api/functions/hello/rollback") + query));
    EXPECT_EQ(r.status, 400) << query;
  }
  EXPECT_TRUE(backend.rollbacks.empty());
}

TEST(ApiPushRouteTest, ReadsTheImageAndTheVersion) {
  auto parsed = ParsePushRequest(
      verb::post, "/api/functions/hello/push?image=127.0.0.1%3A5000%2Fteam%2Fhello%3A1&version=2");
  ASSERT_TRUE(parsed.has_value());
  const auto* push = std::get_if<PushRequest>(&*parsed);
  ASSERT_NE(push, nullptr);
  EXPECT_EQ(push->name, "hello");
  EXPECT_EQ(push->image, "127.0.0.1:5000/team/hello:1");
  EXPECT_EQ(push->version, std::optional<uint64_t>(2));

  parsed = ParsePushRequest(verb::post, "/api/functions/hello/push?image=r/x:1");
  ASSERT_TRUE(parsed.has_value());
  push = std::get_if<PushRequest>(&*parsed);
  ASSERT_NE(push, nullptr);
  EXPECT_EQ(push->version, std::nullopt);
}

TEST(ApiPushRouteTest, OtherPathsAreNotItsAndBadQueriesAre400) {
  for (const char* target : {"/api/functions/hello/pushed", "/api/functions/push",
                             "/api/functions/a/b/push", "/api/functions/hello/logs"})
    EXPECT_FALSE(ParsePushRequest(verb::post, target).has_value()) << target;
  auto status = [](verb method, const std::string& target) {
    auto parsed = ParsePushRequest(method, target);
    const Reply* reply = parsed ? std::get_if<Reply>(&*parsed) : nullptr;
    return reply != nullptr ? reply->status : 0;
  };
  EXPECT_EQ(status(verb::get, "/api/functions/hello/push?image=r/x:1"), 405);
  for (const char* query : {"", "?version=2", "?image=", "?image=r/x:1&version=0",
                            "?image=r/x:1&version=x", "?image=%zz", "?image=r/x:1&tag=2"})
    EXPECT_EQ(status(verb::post, std::string("/api/functions/hello/push") + query), 400) << query;
}

TEST(ApiRouteTest, UnknownFunctionActionsAre404) {
  FakeBackend backend;
  for (const char* target : {"/api/functions/hello/nope", "/api/functions/hello/versions/1",
                             "/api/functions//versions", "/api/functions/hello/"}) {
    EXPECT_EQ(Route(backend, verb::get, target).status, 404) << target;
  }
}

TEST(ApiRouteTest, IpKnownAndUnknown) {
  FakeBackend backend;
  EXPECT_EQ(Route(backend, verb::get, "/api/ip/hello").body["ip"], "10.0.0.10");
  Reply missing = Route(backend, verb::get, "/api/ip/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body["error"], "no function named 'nope'");
}

TEST(ApiRouteTest, ListReturnsTheRegistryObject) {
  FakeBackend backend;
  Reply r = Route(backend, verb::get, "/api/list?pretty=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, backend.List());
}

TEST(ApiRouteTest, VersionIsTheBackendsAnswerAndGetOnly) {
  FakeBackend backend;
  Reply r = Route(backend, verb::get, "/api/version");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, backend.Version());
  EXPECT_EQ(Route(backend, verb::post, "/api/version").status, 405);
  EXPECT_EQ(Route(backend, verb::get, "/api/version/x").status, 404);
}

TEST(ApiRouteTest, MetricsAreTextInThePrometheusFormatAndGetOnly) {
  FakeBackend backend;
  Reply r = Route(backend, verb::get, "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, backend.metrics);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(Route(backend, verb::post, "/metrics").status, 405);
  backend.metrics.reset();
  EXPECT_EQ(Route(backend, verb::get, "/metrics").status, 404);
}

TEST(ApiRouteTest, TheMetricsListenerAnswersGetMetricsAndNothingElse) {
  FakeBackend backend;
  Reply r = RouteMetricsOnly(backend, verb::get, "/metrics?x=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, backend.metrics);
  for (const char* target : {"/api/list", "/healthz", "/metrics/x", "/"})
    EXPECT_EQ(RouteMetricsOnly(backend, verb::get, target).status, 404) << target;
  EXPECT_EQ(RouteMetricsOnly(backend, verb::post, "/metrics").status, 404);
  EXPECT_EQ(RouteMetricsOnly(backend, verb::delete_, "/api/functions/hello").status, 404);
  EXPECT_TRUE(backend.removed.empty());
}

TEST(ApiListenAddressTest, HostPortWithIpv6InBrackets) {
  for (const char* good : {"127.0.0.1:9100", "[::1]:9100", "0.0.0.0:1", "[::]:65535"})
    EXPECT_TRUE(CheckListenAddress(good).ok()) << good;
  for (const char* bad : {"127.0.0.1", "localhost:9100", "127.0.0.1:0", "127.0.0.1:70000", "[::1]",
                          "[::1]:x", "300.1.1.1:80", ""})
    EXPECT_FALSE(CheckListenAddress(bad).ok()) << bad;
}

TEST(ApiRouteTest, DeleteMapsErrorsToStatuses) {
  FakeBackend backend;
  EXPECT_EQ(Settle(Route(backend, verb::delete_, "/api/functions/hello")).status, 200);
  EXPECT_EQ(Settle(Route(backend, verb::delete_, "/api/functions/busy")).status, 409);
  EXPECT_EQ(backend.removed, (std::vector<std::string>{"hello", "busy"}));
}

TEST(ApiRouteTest, DescribeKnownAndUnknown) {
  FakeBackend backend;
  EXPECT_EQ(Route(backend, verb::get, "/api/functions/hello").body["cmd"][0], "/handler");
  EXPECT_EQ(Route(backend, verb::get, "/api/functions/nope").status, 404);
}

TEST(ApiRouteTest, RegressionNonUtf8PathGetsA404InsteadOfAThrow) {
  FakeBackend backend;
  Reply r = Route(backend, verb::delete_, "/api/fnuctions\xc8\x97\x9a\x93lo");
  EXPECT_EQ(r.status, 404);
  std::string text;
  ASSERT_NO_THROW(text = DumpJson(r.body));
  EXPECT_NE(text.find("no such endpoint"), std::string::npos);
  Reply ip = Route(backend, verb::get, "/api/ip/\xff\xfe");
  EXPECT_EQ(ip.status, 404);
  ASSERT_NO_THROW((void)DumpJson(ip.body));
}

TEST(ApiRouteTest, WrongMethodIs405AndUnknownPathIs404) {
  FakeBackend backend;
  EXPECT_EQ(Route(backend, verb::post, "/api/list").status, 405);
  EXPECT_EQ(Route(backend, verb::put, "/api/functions/hello").status, 405);
  EXPECT_EQ(Route(backend, verb::get, "/api/new").status, 405);
  EXPECT_EQ(Route(backend, verb::get, "/api/ip/").status, 404);
  EXPECT_EQ(Route(backend, verb::get, "/api/ip/a/b").status, 404);
  EXPECT_EQ(Route(backend, verb::get, "/nothing").status, 404);
  EXPECT_TRUE(backend.removed.empty());
}

TEST(ApiHostTest, LoopbackNamesWithOrWithoutPortAreAccepted) {
  for (const char* host : {"localhost", "LocalHost:8080", "127.0.0.1", "127.0.0.1:8080",
                           "127.1.2.3:1", "[::1]", "[::1]:8080"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
}

TEST(ApiHostTest, OtherHostsAreRefused) {
  for (const char* host :
       {"", "evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.evil.example",
        "10.0.0.10", "0.0.0.0:8080", "[::2]:80", "[127.0.0.1]", "::1",
        "localhost:", "localhost:80x", "localhost:123456", "[::1]x", "[::1", "localhost evil"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

// A real Server on a unix socket in a temporary directory, its loop on a thread.
class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/faas-api-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Options options;
    options.unix_path = dir_ + "/api.sock";
    server_ = std::make_unique<Server>(io_, backend_, options);
    ASSERT_TRUE(server_->Start().ok());
    loop_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    boost::asio::post(io_, [this] { server_->Stop(); });
    io_.stop();
    loop_.join();
    std::filesystem::remove_all(dir_);
  }

  // Sends `request` on a fresh connection and returns everything read until faasd
  // closes it.
  std::string Exchange(const std::string& request) {
    UniqueFd sock = Send(request);
    std::string reply;
    char buf[4096];
    for (ssize_t n; (n = ::recv(sock.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, n);
    return reply;
  }

  // Sends `request` on a fresh connection, which it returns.
  UniqueFd Send(const std::string& request) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0);
    UniqueFd sock(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = dir_ + "/api.sock";
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    return sock;
  }

  // Reads from `fd` until `reply` ends with `end` (or EOF, or the 10 s timeout).
  static void ReadUntil(int fd, std::string& reply, const std::string& end) {
    char buf[4096];
    while (!reply.ends_with(end)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      reply.append(buf, static_cast<size_t>(n));
    }
  }

  // Runs `fn` on the loop thread and waits for it.
  void OnLoop(std::function<void()> fn) {
    std::promise<void> done;
    boost::asio::post(io_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  static std::string StatusLine(const std::string& reply) {
    return reply.substr(0, reply.find('\r'));
  }

  FakeBackend backend_;
  boost::asio::io_context io_;
  std::string dir_;
  std::unique_ptr<Server> server_;
  std::thread loop_;
};

TEST_F(ApiServerTest, RegressionOneByteBodyOnDeleteIsNot413) {
  std::string reply = Exchange(
      "DELETE /api/functions/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Length: 1\r\n\r\nx");
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK") << reply;
  EXPECT_NE(reply.find(R"({"name":"hello"})"), std::string::npos) << reply;
}

TEST_F(ApiServerTest, SmallChunkedBodyOnGetIsDropped) {
  std::string reply = Exchange(
      "GET /api/ip/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK") << reply;
  EXPECT_NE(reply.find("10.0.0.10"), std::string::npos) << reply;
}

TEST_F(ApiServerTest, MetricsComeAsPlainTextWithTheExpositionFormatsType) {
  std::string reply = Exchange("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK") << reply;
  EXPECT_NE(reply.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos)
      << reply;
  EXPECT_TRUE(reply.ends_with("\r\n\r\nfaasd_functions_deployed 1\n")) << reply;
}

TEST_F(ApiServerTest, BodyOverTheCapIs413) {
  const size_t size = (64 << 10) + 1;
  std::string chunked = "GET /api/list HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  char head[32];
  std::snprintf(head, sizeof head, "%zx\r\n", size);
  chunked += head + std::string(size, 'x') + "\r\n0\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(chunked)), "HTTP/1.1 413 Payload Too Large");
  std::string with_length =
      "GET /api/list HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(with_length)), "HTTP/1.1 413 Payload Too Large");
}

TEST_F(ApiServerTest, LogsAreNdjsonAndFollowingThemIsChunkedUntilTheEnd) {
  std::string plain =
      Exchange("GET /api/functions/hello/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusLine(plain), "HTTP/1.1 200 OK") << plain;
  EXPECT_NE(plain.find("Content-Type: application/x-ndjson"), std::string::npos) << plain;
  EXPECT_TRUE(plain.ends_with("\r\n\r\n{\"line\":\"old\"}\n")) << plain;

  UniqueFd sock = Send("GET /api/functions/hello/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string reply;
  ReadUntil(sock.get(), reply, "{\"line\":\"old\"}\n\r\n");
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK") << reply;
  EXPECT_NE(reply.find("Transfer-Encoding: chunked"), std::string::npos) << reply;
  EXPECT_TRUE(reply.ends_with("\r\n\r\nf\r\n{\"line\":\"old\"}\n\r\n")) << reply;
  OnLoop([&] { backend_.follower->OnRecord("{\"line\":\"new\"}\n"); });
  reply.clear();
  ReadUntil(sock.get(), reply, "\n\r\n");
  EXPECT_EQ(reply, "f\r\n{\"line\":\"new\"}\n\r\n");
  OnLoop([&] { backend_.follower->OnEnd(); });
  reply.clear();
  ReadUntil(sock.get(), reply, "<EOF>");
  EXPECT_EQ(reply, "0\r\n\r\n") << "the last chunk, then the connection is closed";
  OnLoop([] {});
  EXPECT_TRUE(backend_.subscription.expired());
}

TEST_F(ApiServerTest, LogsOfAnUnknownFunctionAre404AndBadQueriesAre400) {
  std::string unknown = Exchange(
      "GET /api/functions/nope/logs?follow=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusLine(unknown), "HTTP/1.1 404 Not Found") << unknown;
  std::string bad = Exchange(
      "GET /api/functions/hello/logs?tail=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusLine(bad), "HTTP/1.1 400 Bad Request") << bad;
  EXPECT_NE(bad.find("invalid tail 'x'"), std::string::npos) << bad;
}

TEST_F(ApiServerTest, AFollowerThatDoesNotReadIsDropped) {
  UniqueFd sock = Send("GET /api/functions/hello/logs?follow=1&tail=0 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string reply;
  ReadUntil(sock.get(), reply, "\r\n\r\n");
  ASSERT_EQ(StatusLine(reply), "HTTP/1.1 200 OK") << reply;
  const std::string record = "{\"line\":\"" + std::string(64 << 10, 'x') + "\"}\n";
  bool dropped = false;
  for (int i = 0; i < 200 && !dropped; ++i)  // 12.5 MiB, far past socket buffers and the cap
    OnLoop([&] {
      backend_.follower->OnRecord(record);
      dropped = backend_.subscription.expired();
    });
  EXPECT_TRUE(dropped) << "the follower's subscription is released";
  reply.clear();
  ReadUntil(sock.get(), reply, "<EOF>");
  EXPECT_LT(reply.size(), 8u << 20) << "what it had not read was not kept for it";
}

}  // namespace
}  // namespace faas::api
