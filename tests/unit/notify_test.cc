#include "server/notify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"

namespace faas::server {
namespace {

using std::chrono::milliseconds;

// A service manager's notification socket: a datagram socket in a temp dir, named by
// NOTIFY_SOCKET (and WATCHDOG_USEC when given) for the test's life.
class FakeServiceManager {
 public:
  explicit FakeServiceManager(const char* watchdog_usec = nullptr) {
    char tmpl[] = "/tmp/faas-notify-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    const std::string path = dir_ + "/notify";
    socket_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(socket_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
    if (watchdog_usec) ::setenv("WATCHDOG_USEC", watchdog_usec, 1);
  }
  ~FakeServiceManager() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    std::filesystem::remove_all(dir_);
  }

  // The messages waiting now, without blocking.
  std::vector<std::string> Pending() {
    std::vector<std::string> out;
    while (auto message = Receive(milliseconds(0))) out.push_back(*message);
    return out;
  }

  std::optional<std::string> Receive(milliseconds timeout) {
    pollfd pfd{.fd = socket_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    ssize_t n = ::recv(socket_.get(), buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

 private:
  std::string dir_;
  UniqueFd socket_;
};

size_t CountPings(const std::vector<std::string>& messages) {
  return static_cast<size_t>(std::count(messages.begin(), messages.end(), "WATCHDOG=1"));
}

TEST(ServiceNotifierTest, WithoutNotifySocketEverythingIsANoOp) {
  ::unsetenv("NOTIFY_SOCKET");
  ::setenv("WATCHDOG_USEC", "100000", 1);
  boost::asio::io_context io;
  int status_calls = 0;
  ServiceNotifier notifier(io, [&] { return std::to_string(++status_calls); });
  notifier.Ready();
  notifier.UpdateStatus();
  notifier.Stopping();
  ::unsetenv("WATCHDOG_USEC");
  EXPECT_FALSE(notifier.enabled());
  EXPECT_EQ(status_calls, 0);
  EXPECT_EQ(io.run_for(milliseconds(100)), 0u) << "no timer may run";
}

TEST(ServiceNotifierTest, ReadyStatusAndStoppingInOrder) {
  FakeServiceManager manager;
  boost::asio::io_context io;
  std::string status = "0 function(s), 0 request(s) served";
  ServiceNotifier notifier(io, [&] { return status; });
  ASSERT_TRUE(notifier.enabled());
  EXPECT_EQ(notifier.watchdog_interval().count(), 0);
  EXPECT_TRUE(manager.Pending().empty()) << "nothing before Ready()";
  notifier.Ready();
  notifier.UpdateStatus();  // unchanged: not sent again
  status = "1 function(s), 0 request(s) served";
  notifier.UpdateStatus();
  notifier.Stopping();
  notifier.UpdateStatus();  // after STOPPING=1 nothing but the watchdog
  EXPECT_EQ(manager.Pending(),
            (std::vector<std::string>{"READY=1\nSTATUS=0 function(s), 0 request(s) served",
                                      "STATUS=1 function(s), 0 request(s) served",
                                      "STOPPING=1\nSTATUS=draining: 1 function(s), 0 request(s) "
                                      "served"}));
}

// The pings come from a timer of the loop, so a loop that is stuck in a handler sends
// none, however long it is stuck; they resume when it turns again.
TEST(ServiceNotifierTest, WatchdogPingsStopWhileTheLoopHangs) {
  FakeServiceManager manager("100000");  // 100 ms: a ping every 50 ms
  boost::asio::io_context io;
  ServiceNotifier notifier(io, [] { return std::string("idle"); });
  ASSERT_EQ(notifier.watchdog_interval(), std::chrono::microseconds(100000));
  notifier.Ready();
  ASSERT_EQ(manager.Receive(milliseconds(0)), "READY=1\nSTATUS=idle");

  io.run_for(milliseconds(300));
  EXPECT_GE(CountPings(manager.Pending()), 3u);

  bool hung = false;
  std::vector<std::string> during_hang;
  boost::asio::post(io, [&] {
    manager.Pending();
    std::this_thread::sleep_for(milliseconds(400));  // the hang itself: 4 intervals
    during_hang = manager.Pending();
    hung = true;
  });
  while (!hung) io.run_one();
  EXPECT_EQ(CountPings(during_hang), 0u);

  io.run_for(milliseconds(300));
  EXPECT_GE(CountPings(manager.Pending()), 3u) << "pings resume once the loop turns";
}

TEST(ServiceNotifierTest, WatchdogPidOfAnotherProcessDisablesTheWatchdog) {
  FakeServiceManager manager("100000");
  ::setenv("WATCHDOG_PID", std::to_string(::getppid()).c_str(), 1);
  boost::asio::io_context io;
  ServiceNotifier notifier(io, [] { return std::string("idle"); });
  ::unsetenv("WATCHDOG_PID");
  EXPECT_EQ(notifier.watchdog_interval().count(), 0);
}

}  // namespace
}  // namespace faas::server
