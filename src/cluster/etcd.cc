#include "cluster/etcd.h"

#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "pull/auth.h"
#include "pull/http.h"

namespace faas::cluster {
namespace {

using nlohmann::json;

constexpr size_t kMaxAnswerBytes = 8 << 20;
constexpr size_t kMaxWatchLine = 8 << 20;

std::string B64(const std::string& bytes) { return pull::Base64Encode(bytes); }

// A 64-bit number as the gateway writes it (a string), or a plain number; 0 if absent.
int64_t Int(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) return std::stoll(it->get<std::string>());
  throw std::runtime_error(std::string("etcd: ") + key + " is not a number");
}

std::string Bytes(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return "";
  std::optional<std::string> decoded = pull::Base64Decode(it->get<std::string>());
  if (!decoded) throw std::runtime_error(std::string("etcd: ") + key + " is not base64");
  return *decoded;
}

KeyValue ParseKv(const json& kv) {
  return {.key = Bytes(kv, "key"),
          .value = Bytes(kv, "value"),
          .create_revision = Int(kv, "create_revision"),
          .mod_revision = Int(kv, "mod_revision"),
          .version = Int(kv, "version"),
          .lease = Int(kv, "lease")};
}

json CompareJson(const Compare& c) {
  const bool create = c.target == Compare::Target::kCreate;
  return {{"key", B64(c.key)},
          {"result", "EQUAL"},
          {"target", create ? "CREATE" : "MOD"},
          {create ? "create_revision" : "mod_revision", std::to_string(c.revision)}};
}

json OpJson(const Op& op) {
  if (op.kind == Op::Kind::kDelete) return {{"request_delete_range", {{"key", B64(op.key)}}}};
  json put = {{"key", B64(op.key)}, {"value", B64(op.value)}};
  if (op.lease != 0) put["lease"] = std::to_string(op.lease);
  return {{"request_put", std::move(put)}};
}

}  // namespace

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// One POST of the API, to the preferred endpoint and then the others.
class Etcd::Call {
 public:
  static Result<json> Post(Etcd& etcd, const std::string& path, const json& body) {
    const EtcdOptions& options = etcd.options_;
    if (options.endpoints.empty()) return MakeError(Errc::kInvalidArgument, "etcd: no endpoints");
    const std::string text = body.dump();
    std::optional<Error> last;
    const size_t first = etcd.preferred_.load();
    for (size_t i = 0; i < options.endpoints.size(); ++i) {
      const size_t index = (first + i) % options.endpoints.size();
      std::string answer;
      pull::HttpRequest request{.method = "POST",
                                .url = options.endpoints[index] + path,
                                .headers = {"Content-Type: application/json"},
                                .body = text,
                                .allow_http = true,
                                .timeout = options.timeout,
                                .connect_timeout = options.timeout};
      auto sent = pull::HttpSend(request, [&answer](std::string_view chunk) -> Status {
        if (answer.size() + chunk.size() > kMaxAnswerBytes)
          return MakeError(Errc::kTooLarge, "etcd: answer over 8 MiB");
        answer.append(chunk);
        return Ok();
      });
      if (!sent.ok()) {
        last = std::move(sent).error();
        continue;
      }
      etcd.preferred_.store(index);
      if (sent->status != 200) {
        json error = json::parse(sent->error_body, nullptr, false);
        std::string says =
            error.is_object() && error.contains("message") && error["message"].is_string()
                ? error["message"].get<std::string>()
                : sent->error_body.substr(0, 200);
        return MakeError(Errc::kUnavailable, "etcd " + options.endpoints[index] + path +
                                                 " answered " + std::to_string(sent->status) +
                                                 ": " + says);
      }
      json doc = json::parse(answer, nullptr, false);
      if (!doc.is_object())
        return MakeError(Errc::kInternal, "etcd " + options.endpoints[index] + path +
                                              " answered something that is not JSON");
      return doc;
    }
    return MakeError(Errc::kUnavailable, "etcd: no endpoint answered: " + last->message);
  }
};

// The JSON of an answer is etcd's: a malformed one throws from the helpers above, and
// is an error here.
template <typename F>
auto Guarded(F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    return MakeError(Errc::kInternal, std::string("etcd: bad answer: ") + e.what());
  }
}

Etcd::Etcd(EtcdOptions options) : options_(std::move(options)) {}

Result<std::vector<KeyValue>> Etcd::Range(const std::string& key, bool prefix, int64_t* revision) {
  json body = {{"key", B64(key)}};
  if (prefix) body["range_end"] = B64(PrefixEnd(key));
  FAAS_ASSIGN_OR_RETURN(json answer, Call::Post(*this, "/v3/kv/range", body));
  return Guarded([&]() -> Result<std::vector<KeyValue>> {
    std::vector<KeyValue> kvs;
    if (answer.contains("kvs"))
      for (const json& kv : answer["kvs"]) kvs.push_back(ParseKv(kv));
    if (revision != nullptr) *revision = Int(answer.value("header", json::object()), "revision");
    return kvs;
  });
}

Result<int64_t> Etcd::Put(const std::string& key, const std::string& value, int64_t lease) {
  json body = {{"key", B64(key)}, {"value", B64(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  FAAS_ASSIGN_OR_RETURN(json answer, Call::Post(*this, "/v3/kv/put", body));
  return Guarded(
      [&]() -> Result<int64_t> { return Int(answer.value("header", json::object()), "revision"); });
}

Result<bool> Etcd::Txn(const std::vector<Compare>& compare, const std::vector<Op>& success,
                       const std::vector<Op>& failure) {
  json body = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const Compare& c : compare) body["compare"].push_back(CompareJson(c));
  for (const Op& op : success) body["success"].push_back(OpJson(op));
  for (const Op& op : failure) body["failure"].push_back(OpJson(op));
  FAAS_ASSIGN_OR_RETURN(json answer, Call::Post(*this, "/v3/kv/txn", body));
  return answer.value("succeeded", false);
}

Result<bool> Etcd::Create(const std::string& key, const std::string& value, int64_t lease) {
  return Txn({{.key = key, .target = Compare::Target::kCreate, .revision = 0}},
             {{.kind = Op::Kind::kPut, .key = key, .value = value, .lease = lease}});
}

Result<bool> Etcd::CompareAndPut(const std::string& key, const std::string& value,
                                 int64_t mod_revision) {
  if (mod_revision == 0) return Create(key, value);
  return Txn({{.key = key, .target = Compare::Target::kMod, .revision = mod_revision}},
             {{.kind = Op::Kind::kPut, .key = key, .value = value, .lease = 0}});
}

Result<bool> Etcd::CompareAndDelete(const std::string& key, int64_t mod_revision) {
  return Txn({{.key = key, .target = Compare::Target::kMod, .revision = mod_revision}},
             {{.kind = Op::Kind::kDelete, .key = key, .value = {}, .lease = 0}});
}

Result<int64_t> Etcd::Delete(const std::string& key, bool prefix) {
  json body = {{"key", B64(key)}};
  if (prefix) body["range_end"] = B64(PrefixEnd(key));
  FAAS_ASSIGN_OR_RETURN(json answer, Call::Post(*this, "/v3/kv/deleterange", body));
  return Guarded([&]() -> Result<int64_t> { return Int(answer, "deleted"); });
}

Result<int64_t> Etcd::GrantLease(std::chrono::seconds ttl) {
  FAAS_ASSIGN_OR_RETURN(
      json answer, Call::Post(*this, "/v3/lease/grant", {{"TTL", std::to_string(ttl.count())}}));
  return Guarded([&]() -> Result<int64_t> {
    const int64_t id = Int(answer, "ID");
    if (id == 0) return MakeError(Errc::kUnavailable, "etcd granted no lease");
    return id;
  });
}

Result<int64_t> Etcd::KeepAlive(int64_t lease) {
  FAAS_ASSIGN_OR_RETURN(json answer,
                        Call::Post(*this, "/v3/lease/keepalive", {{"ID", std::to_string(lease)}}));
  return Guarded(
      [&]() -> Result<int64_t> { return Int(answer.value("result", json::object()), "TTL"); });
}

Status Etcd::Revoke(int64_t lease) {
  FAAS_ASSIGN_OR_RETURN(json answer,
                        Call::Post(*this, "/v3/lease/revoke", {{"ID", std::to_string(lease)}}));
  (void)answer;
  return Ok();
}

Status Etcd::Watch(const std::string& prefix, int64_t start_revision,
                   const std::function<bool()>& stop,
                   const std::function<void(const std::vector<WatchEvent>&, int64_t)>& on_events) {
  const json body = {{"create_request",
                      {{"key", B64(prefix)},
                       {"range_end", B64(PrefixEnd(prefix))},
                       {"start_revision", std::to_string(start_revision)}}}};
  const size_t index = preferred_.load() % std::max<size_t>(options_.endpoints.size(), 1);
  if (options_.endpoints.empty()) return MakeError(Errc::kInvalidArgument, "etcd: no endpoints");
  std::string pending;
  std::optional<Error> failure;
  auto on_line = [&](const std::string& line) -> Status {
    return Guarded([&]() -> Status {
      json doc = json::parse(line);
      if (doc.contains("error")) {
        return MakeError(Errc::kUnavailable,
                         "etcd watch: " + doc["error"].value("message", std::string("error")));
      }
      const json& result = doc.at("result");
      if (result.value("canceled", false)) {
        if (Int(result, "compact_revision") != 0)
          return MakeError(Errc::kNotFound,
                           "etcd watch: revision " + std::to_string(start_revision) + " compacted");
        return MakeError(Errc::kUnavailable,
                         "etcd watch canceled: " + result.value("cancel_reason", std::string()));
      }
      std::vector<WatchEvent> events;
      if (result.contains("events")) {
        for (const json& event : result["events"])
          events.push_back({.deleted = event.value("type", std::string()) == "DELETE",
                            .kv = ParseKv(event.at("kv"))});
      }
      const int64_t revision = Int(result.value("header", json::object()), "revision");
      if (!events.empty()) on_events(events, revision);
      return Ok();
    });
  };
  pull::HttpRequest request{.method = "POST",
                            .url = options_.endpoints[index] + "/v3/watch",
                            .headers = {"Content-Type: application/json"},
                            .body = body.dump(),
                            .allow_http = true,
                            .timeout = std::chrono::hours(24 * 365),
                            .connect_timeout = options_.timeout,
                            .low_speed_bytes = 0,
                            .cancelled = stop};
  auto sent = pull::HttpSend(request, [&](std::string_view chunk) -> Status {
    pending.append(chunk);
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty()) continue;
      FAAS_RETURN_IF_ERROR(on_line(line));
    }
    if (pending.size() > kMaxWatchLine)
      return MakeError(Errc::kTooLarge, "etcd watch: line too long");
    return Ok();
  });
  if (stop()) return Ok();
  if (!sent.ok()) {
    preferred_.store(index + 1);  // the next call tries another member first
    return std::move(sent).error();
  }
  if (sent->status != 200)
    return MakeError(Errc::kUnavailable, "etcd watch answered " + std::to_string(sent->status));
  return MakeError(Errc::kUnavailable, "etcd watch stream ended");
}

}  // namespace faas::cluster
