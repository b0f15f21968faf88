#include "runtime/runtime.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
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

// The service manager's socket and watchdog are faasd's alone: runc would proxy its
// containers' notifications through them.
TEST(ProcessTest, ChildSeesNoServiceNotificationEnvironment) {
  ::setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  ::setenv("FAAS_TEST_KEPT", "yes", 1);
  auto child = Spawn({{"/bin/sh", "-c",
                       "test -z \"${NOTIFY_SOCKET+x}${WATCHDOG_USEC+x}${WATCHDOG_PID+x}\" && "
                       "test \"$FAAS_TEST_KEPT\" = yes"}});
  for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FAAS_TEST_KEPT"})
    ::unsetenv(name);
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

// A fresh directory under /tmp, removed with everything in it at the end of the test.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/faas-runtime-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string path;
};

void WriteExecutable(const std::string& path, const std::string& text, fs::perms perms) {
  std::ofstream(path) << text;
  fs::permissions(path, perms);
}

RuntimeConfig Config(const TempDir& dir, const std::string& program) {
  RuntimeConfig config;
  config.program = program;
  config.root = dir.path + "/state";
  config.cgroup_parent = "/faasd-test-" + std::to_string(::getpid());
  return config;
}

// Runs `body` in a child process with a private mount namespace (so mounts made for a
// test vanish with it) and returns the text it produced.
std::string InMountNamespace(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe failed";
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string out = "cannot make a mount namespace";
    if (::unshare(CLONE_NEWNS) == 0 &&
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0)
      out = body();
    (void)!::write(write_end.get(), out.data(), out.size());
    ::_exit(0);
  }
  write_end.Reset();
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(read_end.get(), buf, sizeof buf)) > 0;) out.append(buf, n);
  ::waitpid(pid, nullptr, 0);
  return out;
}

// "ok NAME" when OpenOciRuntime accepts `program` over the cgroups mounted at
// `cgroup_fs`, else its error message.
std::string OpenResult(const RuntimeConfig& config) {
  auto runtime = OpenOciRuntime(config);
  return runtime.ok() ? "ok " + (*runtime)->name() : runtime.error().message;
}

TEST(OpenOciRuntimeTest, MissingProgramIsOneClearError) {
  TempDir dir;
  auto missing = OpenOciRuntime(Config(dir, "/nonexistent/runc"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(missing.error().message, "OCI runtime /nonexistent/runc: No such file or directory");
  auto not_in_path = OpenOciRuntime(Config(dir, "no-such-oci-runtime"));
  ASSERT_FALSE(not_in_path.ok());
  EXPECT_EQ(not_in_path.error().message, "OCI runtime no-such-oci-runtime: not found in PATH");
  EXPECT_FALSE(fs::exists(dir.path + "/state")) << "nothing created for a failed open";
}

TEST(OpenOciRuntimeTest, NonExecutableProgramIsAnError) {
  TempDir dir;
  WriteExecutable(dir.path + "/runc", "#!/bin/sh\n", fs::perms::owner_read);
  auto plain_file = OpenOciRuntime(Config(dir, dir.path + "/runc"));
  ASSERT_FALSE(plain_file.ok());
  EXPECT_NE(plain_file.error().message.find("Permission denied"), std::string::npos)
      << plain_file.error().message;
  auto directory = OpenOciRuntime(Config(dir, dir.path));
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.error().message.find("not a file"), std::string::npos);
}

TEST(OpenOciRuntimeTest, FindsRuncInPathAndCreatesTheStateDir) {
  TempDir dir;
  auto runtime = OpenOciRuntime(Config(dir, "runc"));
  ASSERT_TRUE(runtime.ok()) << runtime.error().message;
  EXPECT_EQ((*runtime)->name(), "runc");
  EXPECT_EQ(fs::status(dir.path + "/state").permissions(), fs::perms::owner_all);
  EXPECT_EQ((*runtime)->CgroupsPath("c1"), Config(dir, "runc").cgroup_parent + "/c1");
}

TEST(OpenOciRuntimeTest, OtherRuntimeIsNamedAfterItsFile) {
  TempDir dir;
  WriteExecutable(dir.path + "/fake-runtime", "#!/bin/sh\necho 'fake 1.0'\n", fs::perms::owner_all);
  EXPECT_EQ(OpenResult(Config(dir, dir.path + "/fake-runtime")), "ok fake-runtime");
}

TEST(OpenOciRuntimeTest, RuntimeFailingAtVersionIsRefusedWithWhatItSaid) {
  TempDir dir;
  const std::string program = dir.path + "/broken";
  WriteExecutable(program, "#!/bin/sh\necho 'broken: no libseccomp' >&2\nexit 1\n",
                  fs::perms::owner_all);
  EXPECT_EQ(OpenResult(Config(dir, program)),
            "OCI runtime " + program +
                " does not run: `--version` failed (exit 1): broken: no libseccomp");
  EXPECT_FALSE(fs::exists(dir.path + "/state")) << "nothing created for a failed open";
}

TEST(OpenOciRuntimeTest, RuntimeHangingAtVersionIsRefused) {
  TempDir dir;
  WriteExecutable(dir.path + "/slow", "#!/bin/sh\nexec sleep 3600\n", fs::perms::owner_all);
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(
      OpenResult(Config(dir, dir.path + "/slow")),
      "OCI runtime " + dir.path + "/slow does not run: `--version` did not answer within 5 s");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

TEST(CgroupCheckTest, HostCgroupsHaveWhatContainersNeed) {
  Status st = CheckCgroupControllers("/sys/fs/cgroup");
  EXPECT_TRUE(st.ok()) << st.error().message;
}

TEST(CgroupCheckTest, MissingControllersAreNamed) {
  TempDir dir;
  const std::string cgroup_fs = dir.path + "/cgroup";
  fs::create_directory(cgroup_fs);
  std::string result = InMountNamespace([&] {
    // A cgroup_fs where nothing is mounted: a bare tmpfs, as on a host whose cgroup
    // mounts are missing.
    if (::mount("tmpfs", cgroup_fs.c_str(), "tmpfs", 0, "mode=755") != 0 ||
        ::mkdir((cgroup_fs + "/memory").c_str(), 0755) != 0)
      return std::string("mount failed: ") + std::strerror(errno);
    Status st = CheckCgroupControllers(cgroup_fs);
    return st.ok() ? std::string("ok") : st.error().message;
  });
  EXPECT_EQ(result.rfind("the cgroup controller(s) memory, cpu, pids are not available under " +
                             cgroup_fs + ":",
                         0),
            0u)
      << result;
}

// crun under another name (it is recognised by its --version output), over the
// cgroups a test mounts at DIR/cgroup.
RuntimeConfig CrunConfig(const TempDir& dir) {
  RuntimeConfig config = Config(dir, dir.path + "/myruntime");
  fs::create_symlink("/usr/bin/crun", config.program);
  config.cgroup_fs = dir.path + "/cgroup";
  fs::create_directory(config.cgroup_fs);
  return config;
}

TEST(OpenOciRuntimeTest, CrunRefusesHybridCgroupsWithTheReason) {
  TempDir dir;
  const RuntimeConfig config = CrunConfig(dir);
  // The hybrid layout: a tmpfs with cgroup2 at `unified`, whose root always has
  // controllers available (hugetlb on this host, all of them on a v2 host).
  std::string result = InMountNamespace([&] {
    const std::string unified = config.cgroup_fs + "/unified";
    if (::mount("tmpfs", config.cgroup_fs.c_str(), "tmpfs", 0, "mode=755") != 0 ||
        ::mkdir(unified.c_str(), 0755) != 0 ||
        ::mount("cgroup2", unified.c_str(), "cgroup2", 0, nullptr) != 0)
      return std::string("mount failed: ") + std::strerror(errno);
    return OpenResult(config);
  });
  EXPECT_NE(result.find("crun cannot run containers on this host"), std::string::npos) << result;
  EXPECT_NE(result.find("hybrid"), std::string::npos) << result;
  EXPECT_NE(result.find("--runtime runc"), std::string::npos) << result;
}

TEST(OpenOciRuntimeTest, CrunIsAcceptedOnCgroupV2) {
  TempDir dir;
  const RuntimeConfig config = CrunConfig(dir);
  std::string result = InMountNamespace([&] {
    if (::mount("cgroup2", config.cgroup_fs.c_str(), "cgroup2", 0, nullptr) != 0)
      return std::string("mount failed: ") + std::strerror(errno);
    return OpenResult(config);
  });
  EXPECT_EQ(result, "ok crun");
}

// runc and crun both keep a directory per container under root; a run killed while
// the runtime was creating the container leaves one without a state file.
class StateTest : public testing::TestWithParam<std::string> {};

TEST_P(StateTest, HalfCreatedContainerIsListedAndDeleted) {
  TempDir dir;
  RuntimeConfig config = Config(dir, GetParam());
  config.cgroup_fs = dir.path;  // no cgroups at all: crun accepts that
  auto runtime = OpenOciRuntime(config);
  ASSERT_TRUE(runtime.ok()) << runtime.error().message;
  EXPECT_EQ((*runtime)->name(), GetParam());
  auto empty = (*runtime)->List();
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->empty());

  fs::create_directory(config.root + "/faas-half-1");
  EXPECT_TRUE((*runtime)->HasState("faas-half-1"));
  EXPECT_FALSE((*runtime)->HasState("faas-other"));
  auto listed = (*runtime)->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  EXPECT_EQ(*listed, std::vector<std::string>{"faas-half-1"});

  auto del = (*runtime)->Delete("faas-half-1");
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_EQ(DescribeWaitStatus(*del->Wait()), "exit 0");
  EXPECT_FALSE((*runtime)->HasState("faas-half-1"));
  EXPECT_TRUE((*runtime)->List()->empty());
}

INSTANTIATE_TEST_SUITE_P(RuncAndCrun, StateTest, testing::Values("runc", "crun"));

TEST(RuntimeTest, ListFailsWhenTheRuntimeDoes) {
  TempDir dir;
  const std::string program = dir.path + "/fake-runtime";
  WriteExecutable(program, "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nexit 1\n",
                  fs::perms::owner_all);
  auto runtime = OpenOciRuntime(Config(dir, program));
  ASSERT_TRUE(runtime.ok()) << runtime.error().message;
  auto listed = (*runtime)->List();
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.error().message, program + " list: exit 1");
}

// One hierarchy to make test cgroups in: the v2 one, or v1's pids.
std::string TestHierarchy() {
  struct statfs st {};
  if (::statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC)
    return "/sys/fs/cgroup";
  return "/sys/fs/cgroup/pids";
}

// runc made CGROUP_PARENT in every hierarchy; the test removes it.
void RemoveParentCgroups(const RuntimeConfig& config) {
  ::rmdir(("/sys/fs/cgroup" + config.cgroup_parent).c_str());
  for (const auto& entry : fs::directory_iterator("/sys/fs/cgroup"))
    ::rmdir((entry.path().string() + config.cgroup_parent).c_str());
}

// A cgroup CGROUP_PARENT/ID/sub made by hand (as a runtime would, plus a sub-cgroup
// made inside the container) holding a sleeping child.
struct PopulatedCgroup {
  PopulatedCgroup(const RuntimeConfig& config, const std::string& id)
      : parent(TestHierarchy() + config.cgroup_parent), leaf(parent + "/" + id) {
    fs::create_directories(leaf + "/sub");
    auto spawned = Spawn({{"/bin/sleep", "60"}});
    EXPECT_TRUE(spawned.ok());
    child = std::move(spawned).value();
    std::ofstream(leaf + "/sub/cgroup.procs") << child.pid() << "\n";
  }
  ~PopulatedCgroup() {
    child = Child();
    ::rmdir((leaf + "/sub").c_str());
    ::rmdir(leaf.c_str());
  }
  std::string parent, leaf;
  Child child;
};

// runc over this host's cgroups, with a state dir of its own.
class RuncTest : public testing::Test {
 protected:
  void SetUp() override {
    auto opened = OpenOciRuntime(config_);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    runtime_ = std::move(opened).value();
  }
  void TearDown() override { RemoveParentCgroups(config_); }

  TempDir dir_;
  const RuntimeConfig config_ = Config(dir_, "runc");
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(RuncTest, RemoveCgroupsKillsWhatIsLeftAndRemovesThem) {
  EXPECT_TRUE(runtime_->RemoveCgroups("faas-none")) << "no cgroup is the clean case";

  PopulatedCgroup cgroup(config_, "faas-busy");
  ASSERT_TRUE(runtime_->CheckMember("faas-busy", cgroup.child.pid()).ok());
  EXPECT_FALSE(runtime_->RemoveCgroups("faas-busy")) << "busy until the child is gone";
  ASSERT_TRUE(ReadableWithin(cgroup.child.pidfd(), 10000)) << "the child was killed";
  EXPECT_EQ(DescribeWaitStatus(*cgroup.child.Wait()), "killed by signal 9");
  EXPECT_TRUE(runtime_->RemoveCgroups("faas-busy"));
  EXPECT_FALSE(fs::exists(cgroup.leaf));
  EXPECT_TRUE(fs::exists(cgroup.parent)) << "the parent is not the container's";
}

TEST_F(RuncTest, CheckMemberTellsMembersFromStrangers) {
  PopulatedCgroup cgroup(config_, "faas-c1");
  EXPECT_TRUE(runtime_->CheckMember("faas-c1", cgroup.child.pid()).ok()) << "in a sub-cgroup";

  auto outside = runtime_->CheckMember("faas-c1", ::getpid());
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.error().code, Errc::kInvalidArgument);
  EXPECT_NE(outside.error().message.find("is not in the container's cgroup"), std::string::npos);
  // A name that only starts like the cgroup's is another cgroup.
  EXPECT_EQ(runtime_->CheckMember("faas-c", cgroup.child.pid()).error().code,
            Errc::kInvalidArgument);

  auto exited = Spawn({{"/bin/true"}});
  ASSERT_TRUE(exited.ok());
  const pid_t gone = exited->pid();
  ASSERT_TRUE(exited->Wait().ok());
  auto vanished = runtime_->CheckMember("faas-c1", gone);
  ASSERT_FALSE(vanished.ok());
  EXPECT_EQ(vanished.error().code, Errc::kInvalidArgument);
}

// Reads `fd` until `text` shows up, EOF, or 20 s pass.
std::string ReadUntil(int fd, const std::string& text) {
  std::string out;
  char buf[256];
  while (out.find(text) == std::string::npos && ReadableWithin(fd, 20000)) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// A bundle whose rootfs holds only a static busybox, running `script`.
std::string MakeBundle(const TempDir& dir, const std::string& cgroups_path,
                       const std::string& script) {
  const std::string rootfs = dir.path + "/rootfs", bundle = dir.path + "/bundle";
  fs::create_directories(rootfs + "/bin");
  fs::create_directory(bundle);
  fs::copy_file("/bin/busybox", rootfs + "/bin/busybox");
  EXPECT_TRUE(PrepareRootfs(rootfs).ok());
  ContainerSpec spec;
  spec.rootfs = rootfs;
  spec.args = {"/bin/busybox", "sh", "-c", script};
  spec.control_socket = bundle + "/control.sock";
  std::ofstream(spec.control_socket).flush();
  spec.cgroups_path = cgroups_path;
  EXPECT_TRUE(WriteBundle(bundle, spec).ok());
  return bundle;
}

TEST_F(RuncTest, RunsAContainerUntilDeleteRemovesIt) {
  Runtime& runtime = *runtime_;
  const std::string id = "faas-run-1";
  const std::string cgroup = TestHierarchy() + runtime.CgroupsPath(id);
  const std::string bundle =
      MakeBundle(dir_, runtime.CgroupsPath(id), "echo hello; exec /bin/busybox sleep 60");
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  auto run = runtime.Run(id, bundle, write_end.get(), write_end.get());
  write_end.Reset();
  ASSERT_TRUE(run.ok()) << run.error().message;
  ASSERT_NE(ReadUntil(read_end.get(), "hello\n").find("hello\n"), std::string::npos);

  EXPECT_TRUE(runtime.HasState(id));
  EXPECT_EQ(*runtime.List(), std::vector<std::string>{id});
  pid_t in_container = 0;
  std::ifstream(cgroup + "/cgroup.procs") >> in_container;
  ASSERT_GT(in_container, 0);
  EXPECT_TRUE(runtime.CheckMember(id, in_container).ok());

  // Killing `run` leaves the container; `delete --force` ends it and its state.
  ASSERT_TRUE(run->Signal(SIGKILL).ok());
  EXPECT_EQ(DescribeWaitStatus(*run->Wait()), "killed by signal 9");
  EXPECT_TRUE(runtime.HasState(id));
  EXPECT_EQ(::kill(in_container, 0), 0);
  auto del = runtime.Delete(id);
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_EQ(DescribeWaitStatus(*del->Wait()), "exit 0");
  EXPECT_FALSE(runtime.HasState(id));
  EXPECT_TRUE(runtime.List()->empty());
  EXPECT_TRUE(runtime.RemoveCgroups(id));
  EXPECT_FALSE(fs::exists(cgroup));
}

}  // namespace
}  // namespace faas::runtime
