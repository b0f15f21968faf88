#include <gtest/gtest.h>

#include "api/handlers.h"

namespace faas::api {
namespace {

using boost::beast::http::verb;

class FakeBackend : public Backend {
 public:
  Result<UniqueFd> StartDeploy(const std::string&, const std::string&, DeployDone) override {
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
  std::vector<std::string> Degraded() override { return degraded; }
  std::vector<std::string> removed;
  std::vector<std::string> degraded;
};

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

TEST(ApiRouteTest, DeleteMapsErrorsToStatuses) {
  FakeBackend backend;
  EXPECT_EQ(Route(backend, verb::delete_, "/api/functions/hello").status, 200);
  EXPECT_EQ(Route(backend, verb::delete_, "/api/functions/busy").status, 409);
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

}  // namespace
}  // namespace faas::api
