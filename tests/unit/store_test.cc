#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "common/file.h"
#include "store/limits.h"
#include "store/names.h"
#include "store/registry.h"
#include "store/state_dir.h"

namespace faas::store {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/faas-store-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST(NamesTest, AcceptsTheDocumentedAlphabet) {
  for (const char* ok : {"a", "hello", "0abc", "a_b.c-d",
                         "x23456789012345678901234567890123456789012345678901234567890123"})
    EXPECT_TRUE(ValidateName(ok).ok()) << ok;
}

TEST(NamesTest, RejectsEverythingElse) {
  for (const char* bad : {"", "Hello", "-a", "_a", ".a", "a/b", "..", "a b", "a\n", "é",
                          "x234567890123456789012345678901234567890123456789012345678901234"}) {
    auto st = ValidateName(bad);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.error().code, Errc::kInvalidArgument);
  }
}

FunctionRecord Sample() {
  FunctionRecord r;
  r.ip = "10.0.0.10";
  r.rootfs = "/var/lib/faasd/images/hello/rootfs";
  r.cmd = {"/handler", "--flag"};
  r.env = {"PATH=/bin"};
  return r;
}

TEST_F(StoreTest, MissingRegistryIsEmpty) {
  Registry registry(dir_ + "/registry.json");
  ASSERT_TRUE(registry.Load().ok());
  EXPECT_TRUE(registry.functions().empty());
}

TEST_F(StoreTest, SaveLoadRoundTripKeepsTheContract) {
  Registry registry(dir_ + "/registry.json");
  registry.Put("hello", Sample());
  ASSERT_TRUE(registry.Save().ok());
  auto json = nlohmann::json::parse(*ReadFile(dir_ + "/registry.json"));
  EXPECT_EQ(json["hello"]["ip"], "10.0.0.10");
  EXPECT_EQ(json["hello"]["rootfs"], "/var/lib/faasd/images/hello/rootfs");
  EXPECT_EQ(json["hello"]["cmd"], nlohmann::json({"/handler", "--flag"}));

  Registry again(dir_ + "/registry.json");
  ASSERT_TRUE(again.Load().ok());
  ASSERT_NE(again.Find("hello"), nullptr);
  EXPECT_EQ(again.Find("hello")->cmd, Sample().cmd);
  EXPECT_EQ(again.Find("hello")->env, Sample().env);
}

TEST_F(StoreTest, AcceptsMinimalRecordsWithExtraKeys) {
  std::ofstream(dir_ + "/registry.json")
      << R"({"hello": {"ip": "10.0.0.11", "rootfs": "/r", "cmd": ["/bin/sh"], "extra": 1}})";
  Registry registry(dir_ + "/registry.json");
  ASSERT_TRUE(registry.Load().ok());
  EXPECT_EQ(registry.Find("hello")->ip, "10.0.0.11");
}

TEST_F(StoreTest, CorruptRegistryIsAnErrorAndIsNotReplaced) {
  std::ofstream(dir_ + "/registry.json") << "{not json";
  Registry registry(dir_ + "/registry.json");
  EXPECT_FALSE(registry.Load().ok());
  EXPECT_EQ(*ReadFile(dir_ + "/registry.json"), "{not json");
}

TEST_F(StoreTest, RegistryWithBadNameIsRejected) {
  std::ofstream(dir_ + "/registry.json")
      << R"({"../x": {"ip": "10.0.0.11", "rootfs": "/r", "cmd": []}})";
  Registry registry(dir_ + "/registry.json");
  EXPECT_FALSE(registry.Load().ok());
}

TEST_F(StoreTest, StateDirLayoutAndStaleCleanup) {
  StateDir state(dir_ + "/state");
  ASSERT_TRUE(state.Create().ok());
  EXPECT_EQ(state.RootfsPath("hello"), dir_ + "/state/images/hello/rootfs");
  fs::create_directories(state.BundlePath("dead-1"));
  fs::create_directories(state.VersionPath("hello", 2) + "/usr");
  fs::create_directories(state.VersionPath("hello", 3) + "/usr");
  ASSERT_TRUE(state.PointRootfsAt("hello", 3).ok());
  fs::create_directories(state.FunctionDir("hello") + "/.new-1/usr");
  fs::create_directories(state.FunctionDir("first") + "/.new-1/usr");  // crashed first deploy
  fs::create_directories(state.VersionPath("unsaved", 1) + "/usr");    // crashed before save
  ASSERT_TRUE(state.PointRootfsAt("unsaved", 1).ok());
  fs::create_directories(state.TmpDir() + "/import-x");
  ASSERT_TRUE(state.RemoveStale({{"hello", {3}}}).empty());
  EXPECT_FALSE(fs::exists(state.BundlePath("dead-1")));
  EXPECT_FALSE(fs::exists(state.FunctionDir("hello") + "/.new-1"));
  EXPECT_FALSE(fs::exists(state.VersionPath("hello", 2))) << "not the current version";
  EXPECT_FALSE(fs::exists(state.TmpDir() + "/import-x"));
  EXPECT_FALSE(fs::exists(state.FunctionDir("first"))) << "not in the registry";
  EXPECT_FALSE(fs::exists(state.FunctionDir("unsaved"))) << "not in the registry";
  EXPECT_TRUE(fs::is_directory(state.RootfsPath("hello") + "/usr"));
  EXPECT_EQ(fs::read_symlink(state.RootfsPath("hello")), "v3");
}

TEST_F(StoreTest, RegressionCrashAfterLinkSwapBeforeRegistrySaveKeepsTheSavedVersion) {
  StateDir state(dir_ + "/state");
  ASSERT_TRUE(state.Create().ok());
  fs::create_directories(state.VersionPath("fn", 1) + "/usr");
  fs::create_directories(state.VersionPath("fn", 2) + "/usr");
  ASSERT_TRUE(state.PointRootfsAt("fn", 2).ok());  // the link moved, the registry still says 1
  ASSERT_TRUE(state.RemoveStale({{"fn", {1}}}).empty());
  EXPECT_TRUE(fs::exists(state.VersionPath("fn", 1)));
  EXPECT_FALSE(fs::exists(state.VersionPath("fn", 2)));
}

struct Access {
  mode_t mode;
  uid_t uid;
  gid_t gid;
  bool operator==(const Access&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Access& a) {
  return out << std::oct << a.mode << std::dec << " " << a.uid << ":" << a.gid;
}

Access AccessOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return {st.st_mode & 07777, st.st_uid, st.st_gid};
}

TEST_F(StoreTest, StateDirIsRootsAloneWithoutAUserNamespace) {
  StateDir state(dir_ + "/state");
  mode_t saved = ::umask(0);
  ASSERT_TRUE(state.Create().ok());
  ASSERT_TRUE(state.CreateFunctionDir("fn").ok());
  ::umask(saved);
  for (const auto& dir : {state.root(), state.ImagesDir(), state.FunctionDir("fn"), state.TmpDir()})
    EXPECT_EQ(AccessOf(dir), (Access{0700, 0, 0})) << dir;
}

TEST_F(StoreTest, RegressionStateDirLetsOnlyTheUserNamespacesRootReachARootfs) {
  // As an older faasd left it: every directory open to all.
  fs::create_directories(dir_ + "/state/images/old/v1");
  fs::create_directories(dir_ + "/state/tmp");
  for (const char* rel : {"/state", "/state/images", "/state/images/old", "/state/tmp"})
    ::chmod((dir_ + rel).c_str(), 0755);
  ::chmod((dir_ + "/state/images/old/v1").c_str(), 0755);
  StateDir state(dir_ + "/state", 4242);
  ASSERT_TRUE(state.Create().ok());
  ASSERT_TRUE(state.CreateFunctionDir("new").ok());
  EXPECT_EQ(AccessOf(state.root()), (Access{0711, 0, 0}));
  EXPECT_EQ(AccessOf(state.TmpDir()), (Access{0700, 0, 0}));
  for (const auto& dir : {state.ImagesDir(), state.FunctionDir("old"), state.FunctionDir("new")})
    EXPECT_EQ(AccessOf(dir), (Access{0710, 0, 4242})) << dir;
  EXPECT_EQ(AccessOf(state.VersionPath("old", 1)).mode, 0755u) << "a container's / keeps its mode";
  // Started again without a user namespace: back to root alone.
  ASSERT_TRUE(StateDir(dir_ + "/state").Create().ok());
  EXPECT_EQ(AccessOf(state.FunctionDir("old")), (Access{0700, 0, 0}));
}

// In a child with a mount namespace of its own, so that a mount can make a stale
// directory impossible to remove. Returns 0 when the rest was still cleaned up.
int RemoveStaleAroundAMount(const StateDir& state) {
  if (::unshare(CLONE_NEWNS) != 0) return 10;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
  const std::string mnt = state.FunctionDir("fn") + "/.new-1/mnt";
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, nullptr) != 0) return 12;
  std::vector<Error> left = state.RemoveStale({{"fn", {1}}});
  ::umount2(mnt.c_str(), MNT_DETACH);
  if (left.size() != 1) return 1;
  if (left[0].message.find(state.FunctionDir("fn") + "/.new-1") == std::string::npos) return 2;
  if (fs::exists(state.FunctionDir("fn") + "/.new-2")) return 3;
  if (fs::exists(state.TmpDir() + "/import-x")) return 4;
  return 0;
}

TEST_F(StoreTest, RegressionStaleDirThatCannotBeRemovedIsReportedAndTheRestRemoved) {
  StateDir state(dir_ + "/state");
  ASSERT_TRUE(state.Create().ok());
  fs::create_directories(state.VersionPath("fn", 1));
  fs::create_directories(state.FunctionDir("fn") + "/.new-1/mnt");
  fs::create_directories(state.FunctionDir("fn") + "/.new-2/usr");
  fs::create_directories(state.TmpDir() + "/import-x");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(RemoveStaleAroundAMount(state));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: not one error, 2: the error does not name the path, "
                                       "3-4: the clean-up stopped at the first failure";
}

TEST_F(StoreTest, PulledVersionsKeepTheirReference) {
  Registry registry(dir_ + "/registry.json");
  FunctionRecord pulled = Sample();
  pulled.image_ref = "127.0.0.1:5000/team/hello:1";
  pulled.manifest_digest = "sha256:" + std::string(64, 'd');
  pulled.platform = "linux/arm64";
  FunctionRecord archive = Sample();
  archive.version = 1;
  registry.Put("hello", pulled);
  registry.PutKept("hello", {archive});
  ASSERT_TRUE(registry.Save().ok());
  auto json = nlohmann::json::parse(*ReadFile(dir_ + "/registry.json"));
  EXPECT_EQ(json["hello"]["image_ref"], pulled.image_ref);
  EXPECT_EQ(json["hello"]["manifest_digest"], pulled.manifest_digest);
  EXPECT_EQ(json["hello"]["platform"], "linux/arm64");
  EXPECT_FALSE(json["hello"]["versions"][0].contains("image_ref")) << "an archive's has none";

  Registry again(dir_ + "/registry.json");
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.Find("hello")->image_ref, pulled.image_ref);
  EXPECT_EQ(again.Find("hello")->manifest_digest, pulled.manifest_digest);
  EXPECT_EQ(again.Find("hello")->platform, pulled.platform);
  EXPECT_EQ(again.Kept("hello")[0].image_ref, "");
}

TEST_F(StoreTest, KeptVersionsSurviveTheRegistryInOrder) {
  Registry registry(dir_ + "/registry.json");
  FunctionRecord serving = Sample();
  serving.version = 3;
  serving.image_digest = "sha256:" + std::string(64, 'c');
  serving.options = {{"memory", "256M"}, {"env", {"A=1"}}};
  FunctionRecord v2 = Sample(), v1 = Sample();
  v2.version = 2;
  v2.env = {"PATH=/bin", "B=2"};
  v1.version = 1;
  v1.limits.memory_bytes = 64 << 20;
  registry.Put("hello", serving);
  registry.PutKept("hello", {v2, v1});
  registry.Put("other", Sample());
  ASSERT_TRUE(registry.Save().ok());
  auto json = nlohmann::json::parse(*ReadFile(dir_ + "/registry.json"));
  EXPECT_EQ(json["hello"]["version"], 3) << "the function's object is the serving record";
  ASSERT_EQ(json["hello"]["versions"].size(), 2u);
  EXPECT_EQ(json["hello"]["versions"][0]["version"], 2);
  EXPECT_FALSE(json["other"].contains("versions"));

  Registry again(dir_ + "/registry.json");
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.Find("hello")->image_digest, serving.image_digest);
  EXPECT_EQ(again.Find("hello")->options, serving.options);
  ASSERT_EQ(again.Kept("hello").size(), 2u);
  EXPECT_EQ(again.Kept("hello")[0].env, v2.env);
  EXPECT_EQ(again.Kept("hello")[1].limits.memory_bytes, 64u << 20);
  EXPECT_TRUE(again.Kept("other").empty());
  EXPECT_EQ(again.LatestVersion("hello"), 3u);
  EXPECT_EQ(again.LatestVersion("nope"), 0u);
  again.Erase("hello");
  EXPECT_TRUE(again.Kept("hello").empty()) << "Erase forgets every version";
}

TEST_F(StoreTest, LatestVersionCountsKeptVersionsAboveTheServingOne) {
  Registry registry(dir_ + "/registry.json");
  FunctionRecord rolled_back = Sample(), newer = Sample();
  rolled_back.version = 2;
  newer.version = 5;
  registry.Put("fn", rolled_back);
  registry.PutKept("fn", {newer});
  EXPECT_EQ(registry.LatestVersion("fn"), 5u);
}

TEST_F(StoreTest, RegistryOfAnEarlierFaasdLoadsWithoutVersions) {
  std::ofstream(dir_ + "/registry.json") << R"({"hello": {"ip": "10.0.0.11", "rootfs": "/r",
      "cmd": ["/handler"], "env": ["A=1"], "limits": {"memory_bytes": 268435456},
      "version": 4, "deployed_at": "2026-01-01T00:00:00Z"}})";
  Registry registry(dir_ + "/registry.json");
  ASSERT_TRUE(registry.Load().ok());
  EXPECT_EQ(registry.Find("hello")->version, 4u);
  EXPECT_EQ(registry.Find("hello")->image_digest, "");
  EXPECT_EQ(registry.Find("hello")->options, nlohmann::json::object());
  EXPECT_TRUE(registry.Kept("hello").empty());
}

TEST_F(StoreTest, RegistryWithBadVersionsIsAnError) {
  std::ofstream(dir_ + "/registry.json")
      << R"({"hello": {"ip": "10.0.0.11", "rootfs": "/r", "cmd": [], "versions": {"v": 1}}})";
  Registry registry(dir_ + "/registry.json");
  EXPECT_FALSE(registry.Load().ok());
}

TEST_F(StoreTest, RemoveStaleKeepsTheKeptVersions) {
  StateDir state(dir_ + "/state");
  ASSERT_TRUE(state.Create().ok());
  for (uint64_t v : {1, 2, 3, 4}) fs::create_directories(state.VersionPath("fn", v) + "/usr");
  ASSERT_TRUE(state.PointRootfsAt("fn", 2).ok());
  // Version 2 serves (a rollback), 4 and 3 are kept, 1 fell out of the kept set.
  ASSERT_TRUE(state.RemoveStale({{"fn", {2, 3, 4}}}).empty());
  EXPECT_FALSE(fs::exists(state.VersionPath("fn", 1)));
  for (uint64_t v : {2, 3, 4}) EXPECT_TRUE(fs::exists(state.VersionPath("fn", v) + "/usr")) << v;
  EXPECT_EQ(fs::read_symlink(state.RootfsPath("fn")), "v2");
}

TEST(LimitsTest, ParsesMemorySizes) {
  EXPECT_EQ(*ParseMemory("256M"), 256ull << 20);
  EXPECT_EQ(*ParseMemory("256Mi"), 256ull << 20);
  EXPECT_EQ(*ParseMemory("1G"), 1ull << 30);
  EXPECT_EQ(*ParseMemory("1.5g"), 3ull << 29);
  EXPECT_EQ(*ParseMemory("8388608"), 8ull << 20);
  for (const char* bad : {"", "M", "12X", "1", "-5M", "2000G", "1.2.3M"})
    EXPECT_FALSE(ParseMemory(bad).ok()) << bad;
}

TEST(LimitsTest, ParsesCpusAndDurations) {
  EXPECT_EQ(*ParseCpus("0.5"), 500u);
  EXPECT_EQ(*ParseCpus("2"), 2000u);
  EXPECT_FALSE(ParseCpus("0").ok());
  EXPECT_FALSE(ParseCpus("1c").ok());
  EXPECT_EQ(*ParseDuration("500ms"), 500u);
  EXPECT_EQ(*ParseDuration("10s"), 10000u);
  EXPECT_EQ(*ParseDuration("2m"), 120000u);
  EXPECT_EQ(*ParseDuration("3"), 3000u);
  for (const char* bad : {"", "s", "10x", "0ms", "25h"})
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
}

TEST(LimitsTest, DurationsTakeEveryUnitAndTheBareUnitOfTheSetting) {
  constexpr DurationForm kBareMs{.bare_unit_ms = 1};
  EXPECT_EQ(*ParseDuration("1h"), 3600000u);
  EXPECT_EQ(*ParseDuration("1.5s"), 1500u);
  EXPECT_EQ(*ParseDuration("500", "x", kBareMs), 500u);
  EXPECT_EQ(*ParseDuration("500ms", "x", kBareMs), 500u);
  EXPECT_EQ(*ParseDuration("5s", "x", kBareMs), 5000u);
  EXPECT_EQ(*ParseDuration("2m", "x", kBareMs), 120000u);
  EXPECT_FALSE(ParseDuration("0.5", "x", kBareMs).ok());  // under 1 ms
  EXPECT_FALSE(ParseDuration("86400001", "x", kBareMs).ok());
}

TEST(LimitsTest, ZeroDurationOnlyWhereTheSettingAllowsIt) {
  for (const char* zero : {"0", "0ms", "0s", "0m"}) {
    EXPECT_FALSE(ParseDuration(zero).ok()) << zero;
    EXPECT_EQ(*ParseDuration(zero, "x", {.zero_allowed = true}), 0u) << zero;
  }
  Result<uint64_t> tiny = ParseDuration("0.1ms", "--drain-timeout", {.zero_allowed = true});
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.error().message,
            "invalid --drain-timeout '0.1ms': must be 0 or between 1ms and 24h");
}

TEST(LimitsTest, BadDurationNamesTheSettingAndTheForms) {
  Result<uint64_t> bad = ParseDuration("5 s", "--run-timeout", {.bare_unit_ms = 1});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(bad.error().message,
            "invalid --run-timeout '5 s': expected a duration like 500ms, 10s or 2m");
}

TEST(LimitsTest, DeployOptionsApplyOverDefaults) {
  FunctionLimits defaults;
  defaults.timeout_ms = 7000;
  auto opts = ParseDeployOptions(
      R"({"memory":"64M","cpus":"0.25","pids":8,"connect_timeout":"1s","env":["A=1"]})", defaults);
  ASSERT_TRUE(opts.ok()) << opts.error().message;
  EXPECT_EQ(opts->limits.memory_bytes, 64ull << 20);
  EXPECT_EQ(opts->limits.cpu_millis, 250u);
  EXPECT_EQ(opts->limits.pids, 8);
  EXPECT_EQ(opts->limits.connect_timeout_ms, 1000u);
  EXPECT_EQ(opts->limits.timeout_ms, 7000u) << "unset keys keep the daemon's default";
  EXPECT_EQ(opts->env, std::vector<std::string>{"A=1"});
  EXPECT_EQ(ParseDeployOptions("", defaults)->limits.timeout_ms, 7000u);
}

TEST(LimitsTest, BadDeployOptionsAreInvalidArgument) {
  for (const char* bad :
       {"[1]", "{", R"({"colour":"red"})", R"({"env":"A=1"})", R"({"env":["NOEQUALS"]})",
        R"({"env":["=1"]})", R"({"env":["A\u0000=1"]})", R"({"env":["A=x\u0000"]})",
        R"({"env":["A\nB=1"]})", R"({"pids":0})", R"({"memory":true})"}) {
    auto r = ParseDeployOptions(bad, FunctionLimits{});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << bad;
  }
}

TEST(LimitsTest, StartCheckIsOnUnlessTurnedOff) {
  EXPECT_TRUE(ParseDeployOptions("", FunctionLimits{})->start_check);
  EXPECT_TRUE(ParseDeployOptions(R"({"start_check":true})", FunctionLimits{})->start_check);
  EXPECT_FALSE(ParseDeployOptions(R"({"start_check":false})", FunctionLimits{})->start_check);
  for (const char* bad : {R"({"start_check":"no"})", R"({"start_check":0})"}) {
    auto r = ParseDeployOptions(bad, FunctionLimits{});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().message, "option 'start_check' must be true or false");
  }
}

TEST(LimitsTest, StartCheckIsForOneDeployAndNeverCarriedOver) {
  auto first = ParseDeployOptions(R"({"start_check":false,"memory":"256M"})", FunctionLimits{});
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->start_check);
  EXPECT_EQ(first->set, (nlohmann::json{{"memory", "256M"}})) << "start_check is not a setting";
  auto next = ParseDeployOptions("", FunctionLimits{}, ScalingOptions{}, first->set);
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->start_check);
  EXPECT_EQ(next->carried, std::vector<std::string>{"memory"});
}

TEST(LimitsTest, ScalingOptionsApplyOverDefaults) {
  ScalingOptions defaults;
  defaults.queue = 5;
  auto opts = ParseDeployOptions(
      R"({"warm":3,"warm_max":6,"idle_timeout":"2m","max_concurrency":2,"queue_timeout":"500ms",)"
      R"("rate_limit":"2.5","reuse":10})",
      FunctionLimits{}, defaults);
  ASSERT_TRUE(opts.ok()) << opts.error().message;
  EXPECT_EQ(opts->scaling.warm, 3u);
  EXPECT_EQ(opts->scaling.warm_max, 6u);
  EXPECT_EQ(opts->scaling.idle_timeout_ms, 120000u);
  EXPECT_EQ(opts->scaling.max_concurrency, 2u);
  EXPECT_EQ(opts->scaling.queue, 5u) << "unset keys keep the daemon's default";
  EXPECT_EQ(opts->scaling.queue_timeout_ms, 500u);
  EXPECT_DOUBLE_EQ(opts->scaling.rate_limit, 2.5);
  EXPECT_EQ(opts->scaling.reuse, 10u);
  EXPECT_EQ(ParseDeployOptions(R"({"queue":0})", FunctionLimits{})->scaling.queue, 0u);
}

TEST(LimitsTest, WarmAboveWarmMax) {
  auto raised = ParseDeployOptions(R"({"warm":12})", FunctionLimits{});
  ASSERT_TRUE(raised.ok()) << raised.error().message;
  EXPECT_EQ(raised->scaling.warm_max, 12u) << "a default warm-max follows warm up";
  auto refused = ParseDeployOptions(R"({"warm":5,"warm_max":2})", FunctionLimits{});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message, "warm (5) is above warm-max (2)");
}

TEST(LimitsTest, BadScalingOptionsAreInvalidArgument) {
  for (const char* bad :
       {R"({"warm":-1})", R"({"warm":65})", R"({"warm":"many"})", R"({"warm_max":1.5})",
        R"({"max_concurrency":0})", R"({"queue":-1})", R"({"queue_timeout":"abc"})",
        R"({"idle_timeout":"0s"})", R"({"rate_limit":"-1"})", R"({"rate_limit":"fast"})",
        R"({"rate_limit":0.001})", R"({"reuse":0})", R"({"reuse":10001})"}) {
    auto r = ParseDeployOptions(bad, FunctionLimits{});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << bad;
  }
  EXPECT_DOUBLE_EQ(*ParseRate("0"), 0.0);
  EXPECT_DOUBLE_EQ(*ParseRate("100/s"), 100.0);
}

TEST(LimitsTest, RedeployKeepsWhatItDoesNotGive) {
  const nlohmann::json previous = {
      {"env", {"A=1", "B=2"}}, {"memory", "256M"}, {"warm", 2}, {"timeout", "10s"}};
  auto o = ParseDeployOptions(R"({"timeout":"5s"})", FunctionLimits{}, ScalingOptions{}, previous);
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->limits.memory_bytes, 256u << 20);
  EXPECT_EQ(o->limits.timeout_ms, 5000u) << "given wins over carried";
  EXPECT_EQ(o->scaling.warm, 2u);
  EXPECT_EQ(o->env, (std::vector<std::string>{"A=1", "B=2"}));
  EXPECT_EQ(o->carried, (std::vector<std::string>{"env", "memory", "warm"}));
  EXPECT_EQ(o->set,
            (nlohmann::json{
                {"env", {"A=1", "B=2"}}, {"memory", "256M"}, {"warm", 2}, {"timeout", "5s"}}));
}

TEST(LimitsTest, RedeployEnvReplacesTheWholeList) {
  const nlohmann::json previous = {{"env", {"A=1", "B=2"}}, {"memory", "256M"}};
  auto o = ParseDeployOptions(R"({"env":["C=3"]})", FunctionLimits{}, ScalingOptions{}, previous);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->env, (std::vector<std::string>{"C=3"}));
  EXPECT_EQ(o->carried, (std::vector<std::string>{"memory"}));
}

TEST(LimitsTest, ResetStartsFromTheDefaults) {
  FunctionLimits defaults;
  defaults.memory_bytes = 128 << 20;
  const nlohmann::json previous = {{"env", {"A=1"}}, {"memory", "256M"}, {"warm", 3}};
  auto o =
      ParseDeployOptions(R"({"reset":true,"cpus":"0.5"})", defaults, ScalingOptions{}, previous);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->limits.memory_bytes, 128u << 20);
  EXPECT_EQ(o->limits.cpu_millis, 500u);
  EXPECT_EQ(o->scaling.warm, ScalingOptions{}.warm);
  EXPECT_TRUE(o->env.empty());
  EXPECT_TRUE(o->carried.empty());
  EXPECT_EQ(o->set, (nlohmann::json{{"cpus", "0.5"}})) << "reset is not a setting";
  EXPECT_FALSE(ParseDeployOptions(R"({"reset":1})", defaults).ok());
}

TEST(LimitsTest, FirstDeployCarriesNothingAndDefaultsAreNotSettings) {
  auto o = ParseDeployOptions("", FunctionLimits{});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->carried.empty());
  EXPECT_EQ(o->set, nlohmann::json::object());
}

TEST(LimitsTest, CarriedWarmMaxStillBoundsAGivenWarm) {
  const nlohmann::json previous = {{"warm_max", 2}};
  auto o = ParseDeployOptions(R"({"warm":4})", FunctionLimits{}, ScalingOptions{}, previous);
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.error().code, Errc::kInvalidArgument);
}

TEST(LimitsTest, MergeEnvReplacesByKey) {
  auto env = MergeEnv({"PATH=/bin", "A=1"}, {"A=2", "B=3"});
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/bin", "A=2", "B=3"}));
}

// Fails the n-th durable-write syscall (counting open, write, fsync, rename) with `err`.
class FaultyOps : public FileOps {
 public:
  FaultyOps(int fail_at, int err) : fail_at_(fail_at), err_(err) {}
  int Open(const char* path, int flags, int mode) override {
    return Fail() ? -1 : FileOps::Open(path, flags, mode);
  }
  ssize_t Write(int fd, const void* data, size_t size) override {
    return Fail() ? -1 : FileOps::Write(fd, data, size);
  }
  int Fsync(int fd) override { return Fail() ? -1 : FileOps::Fsync(fd); }
  int Rename(const char* from, const char* to) override {
    return Fail() ? -1 : FileOps::Rename(from, to);
  }
  int calls() const { return calls_; }

 private:
  bool Fail() {
    if (++calls_ != fail_at_) return false;
    errno = err_;
    return true;
  }
  int fail_at_;
  int err_;
  int calls_ = 0;
};

TEST_F(StoreTest, FailedSaveAtAnyStepKeepsTheOldRegistry) {
  std::string path = dir_ + "/registry.json";
  Registry good(path);
  good.Put("old", Sample());
  ASSERT_TRUE(good.Save().ok());
  const std::string before = *ReadFile(path);

  FaultyOps counter(0, 0);
  Registry counted(path, counter);
  counted.Put("old", Sample());
  ASSERT_TRUE(counted.Save().ok());
  ASSERT_TRUE(AtomicWriteFile(path, before).ok());
  // open tmp, write, fsync, rename: failing any of these must leave `before`.
  const int steps_before_rename = 4;
  ASSERT_GE(counter.calls(), steps_before_rename);

  for (int err : {ENOSPC, EIO}) {
    for (int step = 1; step <= steps_before_rename; ++step) {
      FaultyOps faulty(step, err);
      Registry registry(path, faulty);
      ASSERT_TRUE(registry.Load().ok());
      registry.Put("new", Sample());
      Status st = registry.Save();
      ASSERT_FALSE(st.ok()) << "step " << step;
      EXPECT_EQ(st.error().sys_errno, err) << "step " << step;
      EXPECT_EQ(*ReadFile(path), before) << "step " << step;
      size_t entries = 0;
      for ([[maybe_unused]] auto& e : fs::directory_iterator(dir_)) ++entries;
      EXPECT_EQ(entries, 1u) << "temp file left behind at step " << step;
    }
  }
}

TEST_F(StoreTest, LimitsSurviveTheRegistry) {
  Registry registry(dir_ + "/registry.json");
  FunctionRecord r = Sample();
  r.limits.memory_bytes = 64ull << 20;
  r.limits.cpu_millis = 250;
  r.uid = 1000;
  registry.Put("hello", r);
  ASSERT_TRUE(registry.Save().ok());
  Registry again(dir_ + "/registry.json");
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.Find("hello")->limits.memory_bytes, 64ull << 20);
  EXPECT_EQ(again.Find("hello")->limits.cpu_millis, 250u);
  EXPECT_EQ(again.Find("hello")->uid, 1000u);
}

TEST_F(StoreTest, ScalingSurvivesTheRegistry) {
  Registry registry(dir_ + "/registry.json");
  FunctionRecord r = Sample();
  r.scaling.warm = 0;
  r.scaling.warm_max = 3;
  r.scaling.queue = 7;
  r.scaling.rate_limit = 0.5;
  registry.Put("hello", r);
  ASSERT_TRUE(registry.Save().ok());
  Registry again(dir_ + "/registry.json");
  ASSERT_TRUE(again.Load().ok());
  const ScalingOptions& s = again.Find("hello")->scaling;
  EXPECT_EQ(s.warm, 0u);
  EXPECT_EQ(s.warm_max, 3u);
  EXPECT_EQ(s.queue, 7u);
  EXPECT_DOUBLE_EQ(s.rate_limit, 0.5);
}

TEST(LimitsTest, RecordWithoutScalingGetsTheDefaults) {
  auto r = FunctionFromJson({{"ip", "10.0.0.10"}, {"rootfs", "/r"}, {"cmd", {"/h"}}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->scaling.warm, ScalingOptions{}.warm);
  EXPECT_EQ(r->scaling.max_concurrency, ScalingOptions::DefaultMaxConcurrency());
}

TEST(RegistryTest, ImageEnvIsKeptApartFromTheDeploysEnv) {
  FunctionRecord r;
  r.ip = "10.0.0.10";
  r.rootfs = "/r";
  r.cmd = {"/h"};
  r.env = {"PATH=/bin", "A=deploy"};
  r.image_env = {"PATH=/bin", "A=image"};
  auto back = FunctionFromJson(ToJson(r));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->image_env, r.image_env);

  // A record of a faasd that did not keep it: the env less what the deploy set.
  auto old = FunctionFromJson({{"ip", "10.0.0.10"},
                               {"rootfs", "/r"},
                               {"cmd", {"/h"}},
                               {"env", {"PATH=/bin", "A=deploy", "B=2"}},
                               {"options", {{"env", {"A=deploy"}}}}});
  ASSERT_TRUE(old.ok()) << old.error().message;
  EXPECT_EQ(old->image_env, (std::vector<std::string>{"PATH=/bin", "B=2"}));
}

}  // namespace
}  // namespace faas::store
