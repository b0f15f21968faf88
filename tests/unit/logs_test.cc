#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "api/log_route.h"
#include "common/file.h"
#include "logs/function_log.h"
#include "logs/query.h"

namespace faas::logs {
namespace {

namespace fs = std::filesystem;
using server::OutputLine;
using server::Stream;
using std::chrono::milliseconds;

const Clock::time_point kT0 = *ParseTime("2026-12-06T05:12:03.123Z");

std::vector<nlohmann::json> Records(const std::string& ndjson) {
  std::vector<nlohmann::json> out;
  size_t start = 0;
  for (size_t nl; (nl = ndjson.find('\n', start)) != std::string::npos; start = nl + 1)
    out.push_back(nlohmann::json::parse(ndjson.substr(start, nl - start)));
  EXPECT_EQ(start, ndjson.size()) << "every record ends with its newline";
  return out;
}

LogQuery Query(std::optional<Clock::time_point> since, std::optional<size_t> tail,
               std::string stream = "") {
  LogQuery query;
  query.since = since;
  query.tail = tail;
  query.stream = std::move(stream);
  return query;
}

class Collector : public LogFollower {
 public:
  void OnRecord(std::string_view record) override { records.emplace_back(record); }
  void OnEnd() override { ended = true; }
  std::vector<std::string> records;
  bool ended = false;
};

class FunctionLogsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/faas-logs-XXXXXX";
    root_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<FunctionLogs> Make(uint64_t max_bytes = 8 << 20, uint64_t rate = 1 << 30) {
    auto logs = std::make_unique<FunctionLogs>(
        io_, LogOptions{.dir = root_ + "/logs", .max_bytes = max_bytes, .rate_bytes = rate});
    EXPECT_TRUE(logs->Start({"f", "g"}).empty());
    return logs;
  }

  static void Out(FunctionLogs& logs, std::string_view text, Stream stream = Stream::kStdout,
                  Clock::time_point time = kT0, std::string_view function = "f") {
    logs.OnOutput(OutputLine{.function = function,
                             .version = 3,
                             .container = "c-1",
                             .stream = stream,
                             .time = time,
                             .text = text,
                             .cut = false});
  }

  uint64_t DiskBytes(const std::string& function) {
    uint64_t total = 0;
    for (const auto& entry : fs::directory_iterator(root_ + "/logs/" + function))
      total += entry.file_size();
    return total;
  }

  boost::asio::io_context io_;
  std::string root_;
};

TEST_F(FunctionLogsTest, KeepsEachLineWithItsFieldsInRootsOwnDirectory) {
  auto logs = Make();
  Out(*logs, "hello");
  Out(*logs, "oops", Stream::kStderr, kT0 + milliseconds(5));
  auto records = Records(*logs->Read("f", {}));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["time"], "2026-12-06T05:12:03.123Z");
  EXPECT_EQ(records[0]["stream"], "stdout");
  EXPECT_EQ(records[0]["version"], 3);
  EXPECT_EQ(records[0]["container"], "c-1");
  EXPECT_EQ(records[0]["line"], "hello");
  EXPECT_FALSE(records[0].contains("cut"));
  EXPECT_EQ(records[1]["stream"], "stderr");
  EXPECT_EQ(records[1]["time"], "2026-12-06T05:12:03.128Z");
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/logs/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat((root_ + "/logs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(FunctionLogsTest, ADeployedFunctionHasItsLogOpenBeforeItWritesAnything) {
  auto logs = Make();
  logs->OnDeploy({.function = "f", .outcome = server::DeployOutcome::kBadImage});
  EXPECT_FALSE(fs::exists(root_ + "/logs/f")) << "a refused deploy opens nothing";
  logs->OnDeploy({.function = "f", .outcome = server::DeployOutcome::kOk, .version = 1});
  EXPECT_TRUE(fs::exists(root_ + "/logs/f/current.log"));
  EXPECT_EQ(DiskBytes("f"), 0u);
  Out(*logs, "hello");
  EXPECT_EQ(Records(*logs->Read("f", {})).size(), 1u);
}

TEST_F(FunctionLogsTest, EscapesControlBytesAndInvalidUtf8AndCutsLongLines) {
  auto logs = Make();
  Out(*logs, "\x1b[31mred\xff tab\there é");
  Out(*logs, std::string(kMaxLine + 100, 'x'));
  OutputLine cut;
  cut.function = "f";
  cut.text = "start";
  cut.cut = true;
  logs->OnOutput(cut);
  auto records = Records(*logs->Read("f", {}));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0]["line"], "\\x1b[31mred\\xff tab\\x09here é");
  EXPECT_EQ(records[1]["line"], std::string(kMaxLine, 'x'));
  EXPECT_EQ(records[1]["cut"], true);
  EXPECT_EQ(records[2]["line"], "start");
  EXPECT_EQ(records[2]["cut"], true);
}

TEST_F(FunctionLogsTest, KeepsOneLinePerRequest) {
  auto logs = Make();
  server::RequestRecord served;
  served.function = "f";
  served.version = 2;
  served.client = "10.0.0.1:41234";
  served.container = "c-9";
  served.start = server::StartKind::kCold;
  served.outcome = server::Outcome::kHandlerError;
  served.accepted = kT0;
  served.queue_wait = std::chrono::microseconds(7000);
  served.duration = std::chrono::microseconds(12500);
  served.exit_status = 3;
  logs->OnRequest(served);
  server::RequestRecord rejected;
  rejected.function = "f";
  rejected.client = "10.0.0.1:41235";
  rejected.outcome = server::Outcome::kRejectedRate;
  rejected.accepted = kT0;
  rejected.answered = 429;
  logs->OnRequest(rejected);
  auto records = Records(*logs->Read("f", {}));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["stream"], "request");
  EXPECT_EQ(records[0]["client"], "10.0.0.1:41234");
  EXPECT_EQ(records[0]["container"], "c-9");
  EXPECT_EQ(records[0]["start"], "cold");
  EXPECT_EQ(records[0]["queue_ms"], 7);
  EXPECT_EQ(records[0]["duration_ms"], 12);
  EXPECT_EQ(records[0]["exit_status"], 3);
  EXPECT_FALSE(records[0].contains("answered"));
  EXPECT_EQ(records[0]["outcome"], "handler_error");
  EXPECT_EQ(records[1]["answered"], 429);
  EXPECT_EQ(records[1]["start"], "none");
  EXPECT_FALSE(records[1].contains("exit_status"));
  EXPECT_EQ(records[1]["outcome"], "rejected_rate");
}

TEST_F(FunctionLogsTest, FiltersBySinceStreamAndTail) {
  auto logs = Make();
  for (int i = 0; i < 10; ++i)
    Out(*logs, "line " + std::to_string(i), i % 2 ? Stream::kStderr : Stream::kStdout,
        kT0 + std::chrono::seconds(i));
  auto since = Records(*logs->Read("f", Query(kT0 + std::chrono::seconds(7), {})));
  ASSERT_EQ(since.size(), 3u);
  EXPECT_EQ(since[0]["line"], "line 7");
  auto err = Records(*logs->Read("f", Query({}, {}, "stderr")));
  ASSERT_EQ(err.size(), 5u);
  EXPECT_EQ(err[4]["line"], "line 9");
  auto tail = Records(*logs->Read("f", Query({}, 2, "stdout")));
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail[0]["line"], "line 6");
  EXPECT_EQ(tail[1]["line"], "line 8");
  EXPECT_TRUE(logs->Read("f", Query({}, 0))->empty());
  EXPECT_TRUE(logs->Read("g", {})->empty()) << "a function without a line yet has an empty log";
}

TEST_F(FunctionLogsTest, RotationBoundsTheDiskAndKeepsTheNewestLines) {
  const uint64_t max = kMinLogBytes;
  auto logs = Make(max);
  const std::string text(1000, 'a');
  for (int i = 0; i < 2000; ++i) Out(*logs, text + std::to_string(i));  // ~2 MB
  EXPECT_LE(DiskBytes("f"), max);
  EXPECT_GE(DiskBytes("f"), max / 2) << "the older file is kept";
  EXPECT_TRUE(fs::exists(root_ + "/logs/f/previous.log"));
  auto records = Records(*logs->Read("f", {}));
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back()["line"], text + "1999");
  EXPECT_GT(records.size(), 100u);
}

TEST_F(FunctionLogsTest, SurvivesARestartAndDropsTheLogsOfFunctionsGone) {
  {
    auto logs = Make();
    Out(*logs, "before", Stream::kStdout, kT0, "f");
    Out(*logs, "gone", Stream::kStdout, kT0, "h");
  }
  ASSERT_TRUE(fs::exists(root_ + "/logs/h"));
  auto logs = Make();  // the registry names f and g
  EXPECT_FALSE(fs::exists(root_ + "/logs/h"));
  Out(*logs, "after");
  auto records = Records(*logs->Read("f", {}));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["line"], "before");
  EXPECT_EQ(records[1]["line"], "after");
}

TEST_F(FunctionLogsTest, ARecordCutShortIsLeftOutAndNotGluedToTheNext) {
  {
    auto logs = Make();
    Out(*logs, "whole");
  }
  {
    std::ofstream current(root_ + "/logs/f/current.log", std::ios::app);
    current << "{\"time\":\"2026-12-06T05:12:03.200Z\",\"stream\":\"stdout\",\"li";
  }
  auto logs = Make();
  EXPECT_EQ(Records(*logs->Read("f", {})).size(), 1u);
  Out(*logs, "next");
  auto records = Records(*logs->Read("f", {}));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["line"], "next");
}

TEST_F(FunctionLogsTest, DropsAFloodOverTheBudgetCountsItAndMarksItsEnd) {
  auto logs = Make(8 << 20, /*rate=*/64 << 10);
  const std::string text(1000, 'o');
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) Out(*logs, text);  // ~1 MB at once
  // The budget: the burst, plus what the bucket earned while the loop ran (a slow,
  // sanitized or loaded run takes longer), plus the marker.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto budget = static_cast<uint64_t>((64u << 10) * (1 + seconds)) + 2000u;
  Out(*logs, "other function", Stream::kStdout, kT0, "g");
  const uint64_t dropped = logs->DroppedLines("f");
  EXPECT_GT(dropped, 1000u - budget / 1000u);
  EXPECT_LT(dropped, 1000u) << "the burst gets through";
  EXPECT_LE(DiskBytes("f"), budget);
  EXPECT_EQ(logs->DroppedLines("g"), 0u) << "one function's flood costs another nothing";
  EXPECT_EQ(logs->DroppedLines("nope"), 0u);
  // Each "N lines dropped" follows its burst; the last comes without a line after it.
  std::vector<nlohmann::json> records;
  for (int i = 0; i < 50 && (records.empty() || records.back()["stream"] != "faasd"); ++i) {
    io_.run_one_for(std::chrono::milliseconds(100));
    records = Records(*logs->Read("f", {}));
  }
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back()["stream"], "faasd");
  uint64_t marked = 0;
  for (const auto& record : records) {
    if (record["stream"] != "faasd") continue;
    const std::string line = record["line"];
    ASSERT_TRUE(line.ends_with(" lines dropped")) << line;
    marked += std::stoull(line);
  }
  EXPECT_EQ(marked, dropped);
}

TEST_F(FunctionLogsTest, FollowersGetNewRecordsOfTheirStreamUntilTheyLetGo) {
  auto logs = Make();
  Collector all, err;
  auto all_handle = logs->Follow("f", {}, &all);
  auto err_handle = logs->Follow("f", Query({}, {}, "stderr"), &err);
  Out(*logs, "one");
  Out(*logs, "two", Stream::kStderr);
  Out(*logs, "elsewhere", Stream::kStdout, kT0, "g");
  ASSERT_EQ(all.records.size(), 2u);
  EXPECT_EQ(Records(all.records[1])[0]["line"], "two");
  ASSERT_EQ(err.records.size(), 1u);
  all_handle.reset();
  Out(*logs, "three");
  EXPECT_EQ(all.records.size(), 2u);
  logs->EndFollowers();
  EXPECT_TRUE(err.ended);
  EXPECT_FALSE(all.ended) << "a follower that let go hears nothing more";
}

TEST_F(FunctionLogsTest, RemovalDeletesTheLogAndEndsItsFollowers) {
  auto logs = Make(8 << 20, 1024);
  Collector follower;
  auto handle = logs->Follow("f", {}, &follower);
  for (int i = 0; i < 100; ++i) Out(*logs, "line");
  ASSERT_GT(logs->DroppedLines("f"), 0u);
  logs->OnRemoved("f");
  EXPECT_TRUE(follower.ended);
  EXPECT_FALSE(fs::exists(root_ + "/logs/f"));
  EXPECT_EQ(logs->DroppedLines("f"), 0u);
  Out(*logs, "from a container of the removed function");
  EXPECT_FALSE(fs::exists(root_ + "/logs/f"));
  logs->OnContainerStarted("f", false);  // deployed again
  Out(*logs, "new");
  EXPECT_EQ(Records(*logs->Read("f", {})).size(), 1u);
}

TEST(LogQueryTest, ParsesEachParameter) {
  const auto now = kT0;
  auto q = ParseLogQuery("since=10m&tail=5&stream=stderr&follow=1&other=x", now);
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(*q->since, now - std::chrono::minutes(10));
  EXPECT_EQ(*q->tail, 5u);
  EXPECT_EQ(q->stream, "stderr");
  EXPECT_TRUE(q->follow);
  auto t = ParseLogQuery("since=2026-12-06T06%3A12%3A03.5%2B01%3A00", now);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(FormatTime(*t->since), "2026-12-06T05:12:03.500Z");
  auto empty = ParseLogQuery("", now);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->since || empty->tail || empty->follow || !empty->stream.empty());
}

TEST(LogQueryTest, RefusesBadValuesNamingThem) {
  const std::pair<const char*, const char*> cases[] = {
      {"tail=-1", "invalid tail '-1'"},
      {"tail=x", "invalid tail 'x'"},
      {"stream=stdin", "invalid stream 'stdin'"},
      {"since=yesterday", "since"},
      {"since=2026-13-01T00:00:00Z", "invalid since"},
      {"follow=yes", "invalid follow 'yes'"},
      {"since=%zz", "percent-encoding"},
  };
  for (const auto& [query, message] : cases) {
    auto q = ParseLogQuery(query, kT0);
    ASSERT_FALSE(q.ok()) << query;
    EXPECT_EQ(q.error().code, Errc::kInvalidArgument);
    EXPECT_NE(q.error().message.find(message), std::string::npos) << q.error().message;
  }
}

TEST(LogQueryTest, TimesRoundTripInUtcWithMilliseconds) {
  EXPECT_EQ(FormatTime(kT0), "2026-12-06T05:12:03.123Z");
  EXPECT_EQ(FormatTime(*ParseTime("2026-12-06T00:00:00-02:30")), "2026-12-06T02:30:00.000Z");
  EXPECT_FALSE(ParseTime("2026-12-06 05:12").ok());
  EXPECT_FALSE(ParseTime("2026-12-06T05:12:03+0100").ok());
  EXPECT_FALSE(ParseTime("2999-01-01T00:00:00Z").ok()) << "past what a time point holds";
}

TEST(LogRouteTest, RecognisesOnlyTheLogsPath) {
  using boost::beast::http::verb;
  EXPECT_FALSE(api::ParseLogsRequest(verb::get, "/api/functions/f", kT0));
  EXPECT_FALSE(api::ParseLogsRequest(verb::get, "/api/functions/a/b/logs", kT0));
  auto ok = api::ParseLogsRequest(verb::get, "/api/functions/f/logs?tail=3", kT0);
  ASSERT_TRUE(ok && std::holds_alternative<api::LogsRequest>(*ok));
  EXPECT_EQ(std::get<api::LogsRequest>(*ok).name, "f");
  EXPECT_EQ(*std::get<api::LogsRequest>(*ok).query.tail, 3u);
  auto post = api::ParseLogsRequest(verb::post, "/api/functions/f/logs", kT0);
  ASSERT_TRUE(post && std::holds_alternative<api::Reply>(*post));
  EXPECT_EQ(std::get<api::Reply>(*post).status, 405);
  auto bad = api::ParseLogsRequest(verb::get, "/api/functions/f/logs?tail=x", kT0);
  ASSERT_TRUE(bad && std::holds_alternative<api::Reply>(*bad));
  EXPECT_EQ(std::get<api::Reply>(*bad).status, 400);
  EXPECT_EQ(api::Chunk(""), "");
  EXPECT_EQ(api::Chunk("{}\n"), "3\r\n{}\n\r\n");
}

}  // namespace
}  // namespace faas::logs
