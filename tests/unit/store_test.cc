#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file.h"
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
  fs::create_directories(state.RootfsPath("hello"));
  fs::create_directories(state.FunctionDir("hello") + "/.new-1/usr");
  fs::create_directories(state.FunctionDir("hello") + "/.old-2");
  fs::create_directories(state.TmpDir() + "/import-x");
  ASSERT_TRUE(state.RemoveStale().ok());
  EXPECT_FALSE(fs::exists(state.BundlePath("dead-1")));
  EXPECT_FALSE(fs::exists(state.FunctionDir("hello") + "/.new-1"));
  EXPECT_FALSE(fs::exists(state.FunctionDir("hello") + "/.old-2"));
  EXPECT_FALSE(fs::exists(state.TmpDir() + "/import-x"));
  EXPECT_TRUE(fs::exists(state.RootfsPath("hello")));
}

}  // namespace
}  // namespace faas::store
