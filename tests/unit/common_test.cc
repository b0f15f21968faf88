#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/fd.h"
#include "common/file.h"
#include "common/scope_guard.h"
#include "common/text.h"

namespace faas {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/faas-common-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ErrorTest, WrapAddsContextAndKeepsCode) {
  Error e = SysError(ENOENT, "open x").Wrap("import web");
  EXPECT_EQ(e.code, Errc::kIo);
  EXPECT_EQ(e.sys_errno, ENOENT);
  EXPECT_EQ(e.message, "import web: open x: No such file or directory");
}

TEST(ErrorTest, EveryCodeMapsToOneHttpStatus) {
  EXPECT_EQ(HttpStatusFor(Errc::kBadImage), 400);
  EXPECT_EQ(HttpStatusFor(Errc::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(Errc::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(Errc::kConflict), 409);
  EXPECT_EQ(HttpStatusFor(Errc::kTooLarge), 413);
  EXPECT_EQ(HttpStatusFor(Errc::kIo), 500);
  EXPECT_EQ(HttpStatusFor(Errc::kInternal), 500);
}

Result<int> Half(int x) {
  if (x % 2) return MakeError(Errc::kInvalidArgument, "odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  FAAS_ASSIGN_OR_RETURN(int half, Half(x));
  return Half(half);
}

TEST(ErrorTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_FALSE(Quarter(6).ok());
  EXPECT_EQ(Quarter(6).error().message, "odd");
}

TEST(UniqueFdTest, ClosesOnDestructionAndMove) {
  int raw;
  {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    raw = fd.get();
    UniqueFd moved = std::move(fd);
    EXPECT_FALSE(fd.valid());
    EXPECT_EQ(moved.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

TEST(ScopeGuardTest, RunsUnlessDismissed) {
  int runs = 0;
  {
    ScopeGuard g([&] { ++runs; });
  }
  {
    ScopeGuard g([&] { ++runs; });
    g.Dismiss();
  }
  EXPECT_EQ(runs, 1);
}

TEST(FileTest, AtomicWriteReplacesAndLeavesNoTemp) {
  TempDir dir;
  std::string path = dir.path() + "/registry.json";
  ASSERT_TRUE(AtomicWriteFile(path, "one").ok());
  ASSERT_TRUE(AtomicWriteFile(path, "two", 0600).ok());
  EXPECT_EQ(*ReadFile(path), "two");
  size_t entries = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST(FileTest, AtomicWriteFailureKeepsOldFile) {
  TempDir dir;
  std::string path = dir.path() + "/registry.json";
  ASSERT_TRUE(AtomicWriteFile(path, "old").ok());
  ::chmod(dir.path().c_str(), 0500);
  // Root ignores directory permissions; a missing directory always fails.
  EXPECT_FALSE(AtomicWriteFile(dir.path() + "/missing/registry.json", "new").ok());
  ::chmod(dir.path().c_str(), 0700);
  EXPECT_EQ(*ReadFile(path), "old");
}

TEST(FileTest, ReadFileEnforcesLimit) {
  TempDir dir;
  std::string path = dir.path() + "/big";
  ASSERT_TRUE(AtomicWriteFile(path, std::string(100, 'x')).ok());
  auto r = ReadFile(path, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

TEST(FileTest, RemoveTreeDoesNotFollowSymlinks) {
  TempDir dir;
  fs::create_directories(dir.path() + "/outside");
  std::ofstream(dir.path() + "/outside/keep") << "keep";
  fs::create_directories(dir.path() + "/tree/sub");
  std::ofstream(dir.path() + "/tree/sub/file") << "x";
  fs::create_directory_symlink(dir.path() + "/outside", dir.path() + "/tree/link");
  ASSERT_TRUE(RemoveTree(dir.path() + "/tree").ok());
  EXPECT_FALSE(fs::exists(dir.path() + "/tree"));
  EXPECT_TRUE(fs::exists(dir.path() + "/outside/keep"));
  EXPECT_TRUE(RemoveTree(dir.path() + "/tree").ok()) << "missing path is success";
}

TEST(TextTest, EscapeControlShowsWhatATerminalWouldAct) {
  EXPECT_EQ(EscapeControl("/handler --port 80"), "/handler --port 80");
  EXPECT_EQ(EscapeControl("caf\xc3\xa9 \xe2\x9c\x93"), "caf\xc3\xa9 \xe2\x9c\x93") << "UTF-8 kept";
  EXPECT_EQ(EscapeControl("a\x1b]0;owned\x07z"), "a\\x1b]0;owned\\x07z");
  EXPECT_EQ(EscapeControl(std::string("k\0v\n\r\t\x7f", 7)), "k\\x00v\\x0a\\x0d\\x09\\x7f");
  EXPECT_EQ(EscapeControl("\xc2\x9b"
                          "31m"),
            "\\u009b31m")
      << "C1 CSI";
  EXPECT_EQ(EscapeControl("x\xe2\x80\xaey"), "x\\u202ey") << "right-to-left override";
  EXPECT_EQ(EscapeControl("\xff\xc3(\xed\xa0\x80"), "\\xff\\xc3(\\xed\\xa0\\x80")
      << "invalid UTF-8 and an encoded surrogate, byte by byte";
  EXPECT_EQ(EscapeControl("\xc0\x9b"), "\\xc0\\x9b") << "an overlong ESC";
}

TEST(TextTest, EscapeJsonControlKeepsTheSameJson) {
  EXPECT_EQ(EscapeJsonControl(R"(["/handler","-x"])"), R"(["/handler","-x"])");
  EXPECT_EQ(EscapeJsonControl("{\n  \"a\": \"\\u001b[2J\"\n}"), "{\n  \"a\": \"\\u001b[2J\"\n}")
      << "layout whitespace and escapes the serializer wrote stay";
  EXPECT_EQ(EscapeJsonControl("[\"\x7f\xc2\x9b\xe2\x81\xa6\"]"), "[\"\\u007f\\u009b\\u2066\"]");
  EXPECT_EQ(EscapeJsonControl("[\"\xff\"]"), "[\"\\ufffd\"]");
}

TEST(TextTest, EnvEntriesNeedAKeyAndNoNulOrControlInTheKey) {
  for (const char* good :
       {"A=1", "PATH=/usr/bin:/bin", "A=b=c", "EMPTY=", "PEM=line1\nline2", "_x.y-z=\xc3\xa9"})
    EXPECT_TRUE(ValidateEnvEntry(good).ok()) << good;
  const std::pair<std::string, std::string> bad[] = {
      {"NOEQUALS", "invalid env 'NOEQUALS': expected KEY=VALUE"},
      {"=1", "invalid env '=1': the key is empty"},
      {"==", "invalid env '==': the key is empty"},
      {std::string("A=x\0y", 5), "invalid env 'A=x\\x00y': it contains a NUL byte"},
      {std::string("A\0=y", 4), "invalid env 'A\\x00=y': it contains a NUL byte"},
      {"A\nB=1", "invalid env 'A\\x0aB=1': the key contains a control character"},
      {"A\x1b[2J=1", "invalid env 'A\\x1b[2J=1': the key contains a control character"},
  };
  for (const auto& [entry, message] : bad) {
    Status valid = ValidateEnvEntry(entry);
    ASSERT_FALSE(valid.ok()) << EscapeControl(entry);
    EXPECT_EQ(valid.error().code, Errc::kInvalidArgument);
    EXPECT_EQ(valid.error().message, message);
  }
}

}  // namespace
}  // namespace faas
