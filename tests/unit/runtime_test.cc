
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "runtime/bundle.h"
#include "runtime/fd_passing.h"
#include "runtime/process.h"

namespace faas::runtime {
namespace {

namespace fs = std::filesystem;

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a.Reset(fds[0]);
    b.Reset(fds[1]);
  }
  UniqueFd a, b;
};

TEST(FdPassingTest, PassesAWorkingFdWithPayload) {
  SocketPair pair;
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  ASSERT_TRUE(SendFd(pair.a.get(), write_end.get(), kSocketPayload).ok());
  write_end.Reset();  // only the passed copy remains

  std::string payload;
  auto received = RecvFd(pair.b.get(), &payload);
  ASSERT_TRUE(received.ok()) << received.error().message;
  EXPECT_EQ(payload, "SOCKET");
  EXPECT_NE(::fcntl(received->get(), F_GETFD) & FD_CLOEXEC, 0);
  ASSERT_EQ(::write(received->get(), "hi", 2), 2);
  char buf[2];
  ASSERT_EQ(::read(read_end.get(), buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
}

TEST(FdPassingTest, MessageWithoutFdIsAnError) {
  SocketPair pair;
  ASSERT_EQ(::write(pair.a.get(), "SOCKET", 6), 6);
  auto received = RecvFd(pair.b.get(), nullptr);
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.error().code, Errc::kInvalidArgument);
}

TEST(FdPassingTest, ClosedPeerIsUnavailable) {
  SocketPair pair;
  pair.a.Reset();
  auto received = RecvFd(pair.b.get(), nullptr);
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.error().code, Errc::kUnavailable);
}

TEST(FdPassingTest, SendToClosedPeerFailsWithoutSignal) {
  SocketPair pair;
  pair.b.Reset();
  EXPECT_FALSE(SendFd(pair.a.get(), 0, kSocketPayload).ok());
}

TEST(ProcessTest, ReportsExitStatus) {
  auto ok = Spawn({{"/bin/true"}});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(DescribeWaitStatus(*ok->Wait()), "exit 0");
  auto fail = Spawn({{"/bin/false"}});
  ASSERT_TRUE(fail.ok());
  EXPECT_EQ(DescribeWaitStatus(*fail->Wait()), "exit 1");
}

TEST(ProcessTest, MissingProgramIsAnError) {
  auto r = Spawn({{"/nonexistent/program"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sys_errno, ENOENT);
}

TEST(ProcessTest, ChildSeesNoInheritedFds) {
  int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(fd, 3);
  auto child = Spawn({{"/bin/sh", "-c", "test ! -e /proc/self/fd/" + std::to_string(fd)}});
  ::close(fd);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(DescribeWaitStatus(*child->Wait()), "exit 0");
}

TEST(ProcessTest, DestructorKillsAndReaps) {
  pid_t pid;
  {
    auto child = Spawn({{"/bin/sleep", "60"}});
    ASSERT_TRUE(child.ok());
    pid = child->pid();
  }
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

bool ReadableWithin(int fd, int timeout_ms) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, timeout_ms) == 1;
}

TEST(ProcessTest, TakeExitFdLeavesSignalAndReapByPid) {
  auto child = Spawn({{"/bin/sleep", "60"}});
  ASSERT_TRUE(child.ok());
  UniqueFd exit_fd = child->TakeExitFd();
  ASSERT_TRUE(exit_fd.valid());
  EXPECT_EQ(child->pidfd(), -1);
  EXPECT_FALSE(ReadableWithin(exit_fd.get(), 0));
  EXPECT_EQ(*child->TryReap(), -1);
  ASSERT_TRUE(child->Signal(SIGTERM).ok());
  EXPECT_TRUE(ReadableWithin(exit_fd.get(), 10000)) << "the taken fd reports the exit";
  EXPECT_EQ(DescribeWaitStatus(*child->TryReap()), "killed by signal 15");
  EXPECT_FALSE(child->running());
}

TEST(ProcessTest, DestructorKillsAndReapsAfterTakeExitFd) {
  UniqueFd exit_fd;
  {
    auto child = Spawn({{"/bin/sleep", "60"}});
    ASSERT_TRUE(child.ok());
    exit_fd = child->TakeExitFd();
  }
  ASSERT_TRUE(ReadableWithin(exit_fd.get(), 0)) << "killed and reaped at once";
  EXPECT_EQ(::waitid(P_PIDFD, static_cast<id_t>(exit_fd.get()), nullptr, WEXITED | WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD) << "no zombie left";
}

TEST(ProcessTest, TryReapBeforeAndAfterExit) {
  auto child = Spawn({{"/bin/sleep", "60"}});
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(*child->TryReap(), -1);
  ASSERT_TRUE(child->Signal(SIGTERM).ok());
  EXPECT_EQ(DescribeWaitStatus(*child->Wait()), "killed by signal 15");
  EXPECT_FALSE(child->running());
}

ContainerSpec Spec() {
  ContainerSpec spec;
  spec.rootfs = "/var/lib/faasd/images/hello/rootfs";
  spec.args = {"/handler"};
  spec.env = {"A=1"};
  spec.control_socket = "/var/lib/faasd/bundles/x/control.sock";
  spec.cgroups_path = "/faasd/x";
  return spec;
}

TEST(BundleTest, ConfigIsLockedDown) {
  auto config = MakeOciConfig(Spec());
  EXPECT_EQ(config["root"]["readonly"], true);
  EXPECT_EQ(config["process"]["noNewPrivileges"], true);
  EXPECT_TRUE(config["process"]["capabilities"]["bounding"].empty());
  EXPECT_EQ(config["process"]["args"], nlohmann::json({"/handler"}));
  EXPECT_EQ(config["process"]["cwd"], "/");
  EXPECT_EQ(config["linux"]["resources"]["memory"]["limit"], 512ull << 20);
  EXPECT_EQ(config["linux"]["resources"]["cpu"]["quota"], 100000);
  std::set<std::string> namespaces;
  for (auto& ns : config["linux"]["namespaces"]) namespaces.insert(ns["type"]);
  EXPECT_EQ(namespaces, (std::set<std::string>{"pid", "network", "ipc", "uts", "mount", "cgroup"}));
  bool socket_mounted = false, tmp_mounted = false;
  for (auto& m : config["mounts"]) {
    if (m["destination"] == "/control.sock")
      socket_mounted = m["source"] == Spec().control_socket && m["type"] == "bind";
    if (m["destination"] == "/tmp") tmp_mounted = m["type"] == "tmpfs";
  }
  EXPECT_TRUE(socket_mounted);
  EXPECT_TRUE(tmp_mounted);
  EXPECT_FALSE(config["linux"]["maskedPaths"].empty());
}

TEST(BundleTest, SeccompIsAnAllowlistWithoutDangerousCalls) {
  auto seccomp = MakeOciConfig(Spec())["linux"]["seccomp"];
  EXPECT_EQ(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
  std::set<std::string> allowed;  // without conditions
  for (auto& rule : seccomp["syscalls"]) {
    if (rule["action"] == "SCMP_ACT_ALLOW" && !rule.contains("args"))
      for (auto& name : rule["names"]) allowed.insert(name);
  }
  for (const char* needed : {"read", "write", "recvmsg", "execve", "exit_group", "futex"})
    EXPECT_TRUE(allowed.count(needed)) << needed;
  for (const char* denied :
       {"mount", "umount2", "unshare", "setns", "ptrace", "bpf", "init_module", "kexec_load",
        "reboot", "keyctl", "io_uring_setup", "pivot_root", "perf_event_open", "open_by_handle_at",
        "userfaultfd", "clone", "clone3"})
    EXPECT_FALSE(allowed.count(denied)) << denied;
}

TEST(BundleTest, RegressionCloneCannotCreateNamespaces) {
  bool clone_checked = false, clone3_refused = false;
  const nlohmann::json config = MakeOciConfig(Spec());
  for (const auto& rule : config["linux"]["seccomp"]["syscalls"]) {
    if (rule["names"] == nlohmann::json::array({"clone"})) {
      ASSERT_EQ(rule["args"].size(), 1u);
      EXPECT_EQ(rule["args"][0]["index"], 0);
      EXPECT_EQ(rule["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
      EXPECT_EQ(rule["args"][0]["valueTwo"], 0);
      uint64_t mask = rule["args"][0]["value"];
      for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                            CLONE_NEWNET, CLONE_NEWCGROUP})
        EXPECT_NE(mask & flag, 0u) << flag;
      EXPECT_EQ(mask & CLONE_THREAD, 0u) << "threads stay possible";
      clone_checked = true;
    }
    if (rule["names"] == nlohmann::json::array({"clone3"}))
      clone3_refused = rule["action"] == "SCMP_ACT_ERRNO" && rule["errnoRet"] == ENOSYS;
  }
  EXPECT_TRUE(clone_checked);
  EXPECT_TRUE(clone3_refused);
}

// What the profile's rules for `call` do with `family` as argument 0: "allow", the errno of
// the one ERRNO rule that matches, or "default" when none does. Fails the test when two
// rules match: libseccomp would then pick by its own precedence, not by the profile.
std::string FamilyVerdict(const std::string& call, uint64_t family) {
  std::vector<std::string> matches;
  const nlohmann::json config = MakeOciConfig(Spec());
  for (const auto& rule : config["linux"]["seccomp"]["syscalls"]) {
    if (std::find(rule["names"].begin(), rule["names"].end(), call) == rule["names"].end())
      continue;
    EXPECT_TRUE(rule.contains("args")) << call << " is allowed without a condition";
    if (!rule.contains("args")) return "unconditional";
    EXPECT_EQ(rule["args"].size(), 1u);
    const auto& arg = rule["args"][0];
    EXPECT_EQ(arg["index"], 0);
    const uint64_t value = arg["value"];
    EXPECT_TRUE(arg["op"] == "SCMP_CMP_EQ" || arg["op"] == "SCMP_CMP_GE") << arg["op"];
    if (arg["op"] == "SCMP_CMP_EQ" ? family != value : family < value) continue;
    matches.push_back(
        rule["action"] == "SCMP_ACT_ALLOW" ? "allow" : strerrorname_np(rule.value("errnoRet", 0)));
  }
  EXPECT_LE(matches.size(), 1u) << call << " " << family;
  return matches.empty() ? "default" : matches[0];
}

TEST(BundleTest, RegressionSocketOnlyForUnixAndIpFamilies) {
  for (uint64_t family = 0; family < 64; ++family) {
    const bool ip = family == AF_UNIX || family == AF_INET || family == AF_INET6;
    EXPECT_EQ(FamilyVerdict("socket", family), ip ? "allow" : "EAFNOSUPPORT") << family;
    EXPECT_EQ(FamilyVerdict("socketpair", family), family == AF_UNIX ? "allow" : "EAFNOSUPPORT")
        << family;
  }
  for (uint64_t family :
       {uint64_t{AF_VSOCK}, uint64_t{AF_NETLINK}, uint64_t{AF_PACKET}, uint64_t{AF_ALG},
        uint64_t{0xffffffff}, ~uint64_t{0}, (uint64_t{1} << 32) | AF_UNIX}) {
    EXPECT_EQ(FamilyVerdict("socket", family), "EAFNOSUPPORT") << family;
  }
}

TEST(BundleTest, UserNamespaceOnlyWhenAsked) {
  auto plain = MakeOciConfig(Spec());
  EXPECT_FALSE(plain["linux"].contains("uidMappings"));
  ContainerSpec spec = Spec();
  spec.userns_base = 100000;
  auto config = MakeOciConfig(spec);
  bool has_user_ns = false;
  for (auto& ns : config["linux"]["namespaces"]) has_user_ns |= ns["type"] == "user";
  EXPECT_TRUE(has_user_ns);
  for (const char* key : {"uidMappings", "gidMappings"}) {
    ASSERT_EQ(config["linux"][key].size(), 1u);
    EXPECT_EQ(config["linux"][key][0]["containerID"], 0);
    EXPECT_EQ(config["linux"][key][0]["hostID"], 100000);
    EXPECT_EQ(config["linux"][key][0]["size"], kUsernsSize);
  }
}

TEST(BundleTest, EnvGetsDefaultPathAndSocketVariable) {
  auto env = MakeOciConfig(Spec())["process"]["env"].get<std::vector<std::string>>();
  EXPECT_EQ(env.front().rfind("PATH=", 0), 0u);
  EXPECT_NE(std::find(env.begin(), env.end(), "A=1"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "FAAS_CONTROL_SOCKET=/control.sock"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "FAAS_TIMEOUT_MS=30000"), env.end());
  ContainerSpec with_path = Spec();
  with_path.env = {"PATH=/opt/bin"};
  auto env2 = MakeOciConfig(with_path)["process"]["env"].get<std::vector<std::string>>();
  EXPECT_EQ(
      std::count_if(env2.begin(), env2.end(), [](auto& e) { return e.rfind("PATH=", 0) == 0; }), 1);
}

TEST(BundleTest, PrepareRootfsCreatesMountPoints) {
  char tmpl[] = "/tmp/faas-rootfs-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  ASSERT_TRUE(PrepareRootfs(root).ok());
  for (const char* d : {"proc", "dev", "sys", "tmp"})
    EXPECT_TRUE(fs::is_directory(root + "/" + d)) << d;
  EXPECT_TRUE(fs::is_regular_file(root + "/control.sock"));
  EXPECT_TRUE(PrepareRootfs(root).ok()) << "idempotent";
  fs::remove(root + "/control.sock");
  fs::create_directory(root + "/control.sock");
  EXPECT_FALSE(PrepareRootfs(root).ok());
  fs::remove_all(root);
}

TEST(BundleTest, WriteBundleWritesConfigOnce) {
  char tmpl[] = "/tmp/faas-bundle-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ASSERT_TRUE(WriteBundle(dir, Spec()).ok());
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_FALSE(WriteBundle(dir, Spec()).ok()) << "never overwrites";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace faas::runtime
