// The container state machine over a fake runtime whose "containers" are plain
// processes (fake_handler): no root, no runc, real fds and real timers.
#include "server/container.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "common/file.h"

namespace faas::server {
namespace {

using std::chrono::milliseconds;

class FakeRuntime final : public runtime::Runtime {
 public:
  std::string mode = "serve";
  std::set<std::string> deleted;
  std::set<std::string> cgroups;  // left by runs: neither `run` nor `delete` removes them
  pid_t last_pid = -1;

  const std::string& name() const override { return name_; }
  std::string CgroupsPath(const std::string& id) const override { return "/fake/" + id; }
  Result<runtime::Child> Run(const std::string& id, const std::string& bundle_dir, int stdout_fd,
                             int stderr_fd) override {
    runs_.insert(id);
    cgroups.insert(id);
    auto child = runtime::Spawn(
        {{FAKE_HANDLER, mode, bundle_dir + "/control.sock"}, -1, stdout_fd, stderr_fd});
    if (child.ok()) last_pid = child->pid();
    return child;
  }
  bool HasState(const std::string& id) const override {
    return runs_.count(id) && !deleted.count(id);
  }
  Result<runtime::Child> Delete(const std::string& id) override {
    deleted.insert(id);
    return runtime::Spawn({{"/bin/true"}});
  }
  Result<std::vector<std::string>> List() override { return std::vector<std::string>(); }
  bool RemoveCgroups(const std::string& id) override {
    cgroups.erase(id);
    return true;
  }
  Status CheckMember(const std::string&, pid_t pid) const override {
    if (pid == last_pid) return Ok();
    return MakeError(Errc::kInvalidArgument, "pid " + std::to_string(pid) + " is a stranger");
  }

 private:
  std::string name_ = "fake";
  std::set<std::string> runs_;
};

class RecordingTelemetry final : public Telemetry {
 public:
  struct Line {
    Stream stream;
    std::string text;
    bool cut;
    uint64_t version;
  };
  void OnRequest(const RequestRecord& record) override { requests.push_back(record); }
  void OnOutput(const OutputLine& line) override {
    EXPECT_EQ(line.function, "fn");
    EXPECT_EQ(line.container, "c1");
    lines.push_back({line.stream, std::string(line.text), line.cut, line.version});
  }
  void OnContainerStarted(std::string_view function, bool pooled) override {
    started.emplace_back(std::string(function), pooled);
  }
  std::vector<RequestRecord> requests;
  std::vector<Line> lines;
  std::vector<std::pair<std::string, bool>> started;
};

class ContainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/container-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  std::shared_ptr<Container> Make(server::Client client,
                                  milliseconds connect_timeout = milliseconds(5000),
                                  uint64_t run_timeout_ms = 5000) {
    ContainerConfig config{
        .function = "fn",
        .version = 7,
        .rootfs = std::make_shared<RootfsVersion>(dir_, [](std::string) {}),
        .spec = {.rootfs = dir_,
                 .args = {"/handler"},
                 .env = {},
                 .cwd = "/",
                 .run_timeout_ms = run_timeout_ms},
        .connect_timeout = connect_timeout,
        .telemetry = &telemetry_,
    };
    return std::make_shared<Container>(io_, runtime_, std::move(config), "c1", bundle(),
                                       std::move(client),
                                       Instance::Events{.done = [this](Instance*) { ++done_; },
                                                        .idle = [this](Instance*) { ++idle_; },
                                                        .ready = [this](Instance*) { ++ready_; }});
  }
  std::string bundle() const { return dir_ + "/c1"; }
  server::Client Client() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    peer_ = UniqueFd(fds[1]);
    return {.fd = UniqueFd(fds[0]), .peer = "192.0.2.7:1000"};
  }
  // The one request record, checked for what every record has.
  const RequestRecord& OnlyRequest() {
    EXPECT_EQ(telemetry_.requests.size(), 1u);
    if (telemetry_.requests.empty()) telemetry_.requests.emplace_back();
    const RequestRecord& record = telemetry_.requests.front();
    EXPECT_EQ(record.function, "fn");
    EXPECT_EQ(record.version, 7u);
    EXPECT_EQ(record.client, "192.0.2.7:1000");
    EXPECT_EQ(record.container, "c1");
    return record;
  }
  // Runs the loop until the container reported done (or 10 s passed).
  void RunUntilDone() {
    for (int i = 0; i < 1000 && done_ == 0; ++i) io_.run_for(milliseconds(10));
    ASSERT_EQ(done_, 1);
  }
  // Everything the client received until the connection closed.
  std::string ClientReads() {
    std::string all;
    char buf[512];
    for (ssize_t n; (n = ::recv(peer_.get(), buf, sizeof buf, 0)) > 0;)
      all.append(buf, static_cast<size_t>(n));
    return all;
  }
  bool BundleExists() const {
    struct stat st;
    return ::lstat(bundle().c_str(), &st) == 0;
  }

  boost::asio::io_context io_;
  FakeRuntime runtime_;
  RecordingTelemetry telemetry_;
  std::string dir_;
  UniqueFd peer_;
  int done_ = 0, idle_ = 0, ready_ = 0;
};

TEST_F(ContainerTest, HandsTheClientOverAndCleansUpAfterTheHandlerExits) {
  auto container = Make(Client());
  container->Start();
  EXPECT_TRUE(BundleExists());
  RunUntilDone();
  EXPECT_EQ(container->state(), Container::State::kCleaned);
  EXPECT_EQ(ClientReads(), "HTTP/1.0 200 OK\r\n\r\nhello\n");
  EXPECT_FALSE(BundleExists());
  EXPECT_EQ(runtime_.deleted.count("c1"), 1u) << "the runtime's state is deleted";
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kOk);
  EXPECT_EQ(record.start, StartKind::kCold);
  EXPECT_EQ(record.exit_status, 0);
  EXPECT_EQ(record.answered, 0);
  EXPECT_GT(record.duration.count(), 0);
  EXPECT_EQ(telemetry_.started, (std::vector<std::pair<std::string, bool>>{{"fn", false}}));
}

TEST_F(ContainerTest, ReportsStdoutAndStderrLineByLineAndCutsLongLines) {
  runtime_.mode = "chatty";
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  std::vector<std::string> out, err;
  for (const auto& line : telemetry_.lines) {
    EXPECT_EQ(line.version, 7u);
    (line.stream == Stream::kStdout ? out : err).push_back(line.text);
    EXPECT_EQ(line.cut, line.text.size() == Container::kMaxLine) << line.text.substr(0, 20);
  }
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], "out 1");
  EXPECT_EQ(out[1], std::string(Container::kMaxLine, 'x')) << "cut, the rest dropped";
  EXPECT_EQ(out[2], "out 2");
  EXPECT_EQ(out[3], "no newline") << "the last line counts at the end of the pipe";
  EXPECT_EQ(err, std::vector<std::string>{"err 1"});
  EXPECT_EQ(OnlyRequest().outcome, Outcome::kOk);
}

TEST_F(ContainerTest, RuntimeExitingBeforeTheHandlerConnectsAnswers502) {
  runtime_.mode = "exit1";
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads().rfind("HTTP/1.1 502 Bad Gateway\r\n", 0), 0u);
  EXPECT_FALSE(BundleExists());
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kHandlerError);
  EXPECT_EQ(record.answered, 502);
  EXPECT_EQ(record.exit_status, 1);
}

TEST_F(ContainerTest, HandlerThatNeverConnectsIsKilledAndTheClientGets504) {
  runtime_.mode = "never";
  auto container = Make(Client(), milliseconds(200));
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads().rfind("HTTP/1.1 504 Gateway Timeout\r\n", 0), 0u);
  EXPECT_FALSE(BundleExists());
  EXPECT_EQ(runtime_.deleted.count("c1"), 1u);
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kTimeout);
  EXPECT_EQ(record.answered, 504);
  EXPECT_EQ(container->ending(), Container::Ending::kConnectTimeout);
  EXPECT_FALSE(record.exit_status) << "reported when faasd answered, before the kill";
}

TEST_F(ContainerTest, HandlerDyingAfterTheHandOverLeavesTheClientToTheKernel) {
  runtime_.mode = "die-after";
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads(), "") << "the handler had the client: faasd answers nothing";
  EXPECT_FALSE(BundleExists());
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kHandlerError);
  EXPECT_EQ(record.answered, 0);
  EXPECT_EQ(record.exit_status, 128 + SIGKILL);
}

TEST_F(ContainerTest, PooledContainerWaitsReadyAndServesTheClientAttachedLater) {
  auto container = Make(server::Client{});
  container->Start();
  for (int i = 0; i < 1000 && !container->ready(); ++i) io_.run_for(milliseconds(10));
  ASSERT_TRUE(container->ready());
  EXPECT_FALSE(container->served());
  EXPECT_TRUE(telemetry_.requests.empty());
  server::Client client = Client();
  client.queue_wait = milliseconds(3);
  ASSERT_TRUE(container->Attach(client));
  EXPECT_FALSE(client) << "the container took it";
  RunUntilDone();
  EXPECT_EQ(ClientReads(), "HTTP/1.0 200 OK\r\n\r\nhello\n");
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kOk);
  EXPECT_EQ(record.start, StartKind::kWarm);
  EXPECT_EQ(record.queue_wait, milliseconds(3));
  EXPECT_EQ(telemetry_.started, (std::vector<std::pair<std::string, bool>>{{"fn", true}}));
}

TEST_F(ContainerTest, PooledContainerReportsReadyOnceItsHandlerConnects) {
  auto container = Make(server::Client{});
  container->Start();
  EXPECT_EQ(ready_, 0);
  for (int i = 0; i < 1000 && ready_ == 0; ++i) io_.run_for(milliseconds(10));
  EXPECT_EQ(ready_, 1);
  EXPECT_TRUE(container->ready());
  container->Kill("test over");
  RunUntilDone();
  EXPECT_EQ(ready_, 1);
}

TEST_F(ContainerTest, ContainerStartedForAClientDoesNotReportReady) {
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ready_, 0);
}

TEST_F(ContainerTest, HandlerExitingBeforeItsConnectLeavesItsStatusAndLastLines) {
  runtime_.mode = "complain";
  auto container = Make(server::Client{});
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ready_, 0);
  EXPECT_EQ(container->outcome(), "exit 3");
  EXPECT_EQ(container->ending(), Container::Ending::kExited);
  std::vector<std::string> expected;
  for (int i = 3; i <= 12; ++i) expected.push_back("line " + std::to_string(i));
  EXPECT_EQ(container->last_output(), expected) << "the last ten lines, in order";
  EXPECT_EQ(container->OutputSummary(2), "line 11 | line 12");
  EXPECT_FALSE(BundleExists());
  EXPECT_TRUE(runtime_.cgroups.empty()) << "the cgroups a runtime left behind are removed";
}

TEST_F(ContainerTest, ReadyCallbackMayGiveTheContainerOtherEvents) {
  auto container = Make(server::Client{});
  int adopted_done = 0;
  container->SetEvents(
      {.done = [this](Instance*) { ++done_; },
       .idle = {},
       .ready =
           [&](Instance* c) {
             ++ready_;
             c->SetEvents({.done = [&](Instance*) { ++adopted_done; }, .idle = {}, .ready = {}});
           }});
  container->Start();
  for (int i = 0; i < 1000 && ready_ == 0; ++i) io_.run_for(milliseconds(10));
  ASSERT_EQ(ready_, 1);
  container->Kill("test over");
  for (int i = 0; i < 1000 && adopted_done == 0; ++i) io_.run_for(milliseconds(10));
  EXPECT_EQ(adopted_done, 1);
  EXPECT_EQ(done_, 0);
}

TEST_F(ContainerTest, KilledPooledContainerRefusesAClientAndCleansUp) {
  runtime_.mode = "never";
  auto container = Make(server::Client{});
  container->Start();
  container->Kill("pool shrinking");
  server::Client client = Client();
  EXPECT_FALSE(container->Attach(client));
  EXPECT_TRUE(client) << "the client stays with the caller";
  RunUntilDone();
  EXPECT_FALSE(BundleExists());
}

TEST_F(ContainerTest, RunTimeoutKillsAHandlerThatKeepsItsClient) {
  runtime_.mode = "hold";
  auto container = Make(Client(), milliseconds(5000), /*run_timeout_ms=*/200);
  container->Start();
  RunUntilDone();  // never, without the run timeout
  EXPECT_EQ(ClientReads(), "") << "the handler had the client; killing it closes the connection";
  EXPECT_FALSE(BundleExists());
  EXPECT_EQ(runtime_.deleted.count("c1"), 1u);
  const RequestRecord& record = OnlyRequest();
  EXPECT_EQ(record.outcome, Outcome::kTimeout);
  EXPECT_EQ(record.exit_status, 128 + SIGKILL);
  EXPECT_EQ(container->ending(), Container::Ending::kRunTimeout);
}

}  // namespace
}  // namespace faas::server
