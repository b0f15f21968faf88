// The container state machine over a fake runtime whose "containers" are plain
// processes (fake_handler): no root, no runc, real fds and real timers.
#include "server/container.h"

#include <gtest/gtest.h>
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
  pid_t last_pid = -1;

  const std::string& name() const override { return name_; }
  std::string CgroupsPath(const std::string& id) const override { return "/fake/" + id; }
  Result<runtime::Child> Run(const std::string& id, const std::string& bundle_dir,
                             int output_fd) override {
    runs_.insert(id);
    auto child = runtime::Spawn(
        {{FAKE_HANDLER, mode, bundle_dir + "/control.sock"}, -1, output_fd, output_fd});
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
  bool RemoveCgroups(const std::string&) override { return true; }
  Status CheckMember(const std::string&, pid_t pid) const override {
    if (pid == last_pid) return Ok();
    return MakeError(Errc::kInvalidArgument, "pid " + std::to_string(pid) + " is a stranger");
  }

 private:
  std::string name_ = "fake";
  std::set<std::string> runs_;
};

class ContainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/container-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  std::shared_ptr<Container> Make(UniqueFd client,
                                  milliseconds connect_timeout = milliseconds(5000),
                                  uint64_t run_timeout_ms = 5000) {
    ContainerConfig config{
        .function = "fn",
        .rootfs = std::make_shared<RootfsVersion>(dir_, [](std::string) {}),
        .spec = {.rootfs = dir_,
                 .args = {"/handler"},
                 .env = {},
                 .cwd = "/",
                 .run_timeout_ms = run_timeout_ms},
        .connect_timeout = connect_timeout,
    };
    return std::make_shared<Container>(io_, runtime_, std::move(config), "c1", bundle(),
                                       std::move(client),
                                       Instance::Events{.done = [this](Instance*) { ++done_; },
                                                        .idle = [this](Instance*) { ++idle_; },
                                                        .ready = [this](Instance*) { ++ready_; }});
  }
  std::string bundle() const { return dir_ + "/c1"; }
  UniqueFd Client() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    peer_ = UniqueFd(fds[1]);
    return UniqueFd(fds[0]);
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
}

TEST_F(ContainerTest, RuntimeExitingBeforeTheHandlerConnectsAnswers502) {
  runtime_.mode = "exit1";
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads().rfind("HTTP/1.1 502 Bad Gateway\r\n", 0), 0u);
  EXPECT_FALSE(BundleExists());
}

TEST_F(ContainerTest, HandlerThatNeverConnectsIsKilledAndTheClientGets504) {
  runtime_.mode = "never";
  auto container = Make(Client(), milliseconds(200));
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads().rfind("HTTP/1.1 504 Gateway Timeout\r\n", 0), 0u);
  EXPECT_FALSE(BundleExists());
  EXPECT_EQ(runtime_.deleted.count("c1"), 1u);
}

TEST_F(ContainerTest, HandlerDyingAfterTheHandOverLeavesTheClientToTheKernel) {
  runtime_.mode = "die-after";
  auto container = Make(Client());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ClientReads(), "") << "the handler had the client: faasd answers nothing";
  EXPECT_FALSE(BundleExists());
}

TEST_F(ContainerTest, PooledContainerWaitsReadyAndServesTheClientAttachedLater) {
  auto container = Make(UniqueFd());
  container->Start();
  for (int i = 0; i < 1000 && !container->ready(); ++i) io_.run_for(milliseconds(10));
  ASSERT_TRUE(container->ready());
  EXPECT_FALSE(container->served());
  UniqueFd client = Client();
  ASSERT_TRUE(container->Attach(client));
  EXPECT_FALSE(client) << "the container took it";
  RunUntilDone();
  EXPECT_EQ(ClientReads(), "HTTP/1.0 200 OK\r\n\r\nhello\n");
}

TEST_F(ContainerTest, PooledContainerReportsReadyOnceItsHandlerConnects) {
  auto container = Make(UniqueFd());
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
  auto container = Make(UniqueFd());
  container->Start();
  RunUntilDone();
  EXPECT_EQ(ready_, 0);
  EXPECT_EQ(container->outcome(), "exit 3");
  std::vector<std::string> expected;
  for (int i = 3; i <= 12; ++i) expected.push_back("line " + std::to_string(i));
  EXPECT_EQ(container->last_output(), expected) << "the last ten lines, in order";
  EXPECT_FALSE(BundleExists());
}

TEST_F(ContainerTest, ReadyCallbackMayGiveTheContainerOtherEvents) {
  auto container = Make(UniqueFd());
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
  auto container = Make(UniqueFd());
  container->Start();
  container->Kill("pool shrinking");
  UniqueFd client = Client();
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
}

}  // namespace
}  // namespace faas::server
