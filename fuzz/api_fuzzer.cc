// Fuzzes the control API's request path: HTTP parsing with the server's limits,
// then routing to a backend that answers like the daemon does.
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>

#include "api/handlers.h"

namespace {

namespace http = boost::beast::http;

class Backend : public faas::api::Backend {
 public:
  faas::Result<faas::UniqueFd> StartDeploy(const std::string&, const std::string&,
                                           std::shared_ptr<const faas::api::DeployCancel>,
                                           DeployDone) override {
    return faas::MakeError(faas::Errc::kInternal, "no deploys here");
  }
  faas::Result<nlohmann::json> Describe(const std::string& name) override { return GetIp(name); }
  faas::Result<nlohmann::json> GetIp(const std::string& name) override {
    if (name != "hello") return faas::MakeError(faas::Errc::kNotFound, "no function " + name);
    return nlohmann::json{{"name", name}, {"ip", "10.0.0.10"}};
  }
  nlohmann::json List() override { return nlohmann::json::object(); }
  faas::Result<nlohmann::json> Remove(const std::string& name) override { return GetIp(name); }
  nlohmann::json Version() override { return {{"version", "0.0.0"}, {"api", 1}}; }
  faas::Result<nlohmann::json> Versions(const std::string& name) override { return GetIp(name); }
  faas::Result<nlohmann::json> Rollback(const std::string& name, std::optional<uint64_t>) override {
    return GetIp(name);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Backend backend;
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 << 10);
  parser.body_limit(64 << 10);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_header_done()) return 0;
  const auto& req = parser.get();
  auto reply = faas::api::Route(backend, req.method(), std::string(req.target()));
  (void)faas::api::DumpJson(reply.body);
  (void)req[faas::api::kFunctionOptionsHeader];
  return 0;
}
