#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
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

struct Pipe {
  UniqueFd read_end, write_end;
};

Pipe MakePipe(int flags = 0) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC | flags), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Text no two offsets of which look alike, so a lost or repeated piece shows.
std::string Numbered(size_t size) {
  std::string text;
  for (size_t i = 0; text.size() < size; ++i) text += std::to_string(i) + ",";
  text.resize(size);
  return text;
}

// Sends SIGUSR1, handled without SA_RESTART, to one thread every millisecond while it
// lives, so that thread's blocking read or write returns EINTR or comes up short.
class Interrupter {
 public:
  explicit Interrupter(pthread_t target) {
    handled_ = 0;
    struct sigaction action {};
    action.sa_handler = [](int) { ++handled_; };
    ::sigemptyset(&action.sa_mask);
    ::sigaction(SIGUSR1, &action, &previous_);
    sender_ = std::thread([this, target] {
      while (!stop_) {
        ::pthread_kill(target, SIGUSR1);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  ~Interrupter() {
    Stop();
    ::sigaction(SIGUSR1, &previous_, nullptr);
  }
  void Stop() {
    stop_ = true;
    if (sender_.joinable()) sender_.join();
  }
  // Waits until `count` signals were handled; false after 10 s (a target that is gone
  // takes no more).
  static bool WaitForSignals(int count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (handled_ < count) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  }

 private:
  static inline std::atomic<int> handled_{0};
  struct sigaction previous_ {};
  std::atomic<bool> stop_{false};
  std::thread sender_;
};

TEST(IoTest, WriteAllAndReadAllMoveMoreThanAPipeHolds) {
  Pipe pipe = MakePipe();
  const std::string data = Numbered(1 << 20);
  std::thread writer([&] {
    EXPECT_TRUE(WriteAll(pipe.write_end.get(), data).ok());
    pipe.write_end.Reset();
  });
  auto read = ReadAll(pipe.read_end.get(), data.size());
  writer.join();
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_TRUE(*read == data);
}

TEST(IoTest, WriteAllSurvivesSignalsWhileThePipeIsFull) {
  Pipe pipe = MakePipe();
  const std::string data = Numbered(4 << 20);
  Status written;
  std::thread writer([&] {
    written = WriteAll(pipe.write_end.get(), data);
    pipe.write_end.Reset();
  });
  Interrupter interrupter(writer.native_handle());
  // Nobody reads yet: the writer sits in write() on a full pipe while the signals land.
  const bool interrupted = Interrupter::WaitForSignals(20);
  auto read = ReadAll(pipe.read_end.get(), data.size());
  interrupter.Stop();
  writer.join();
  EXPECT_TRUE(interrupted);
  ASSERT_TRUE(written.ok()) << written.error().message;
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_TRUE(*read == data);
}

TEST(IoTest, ReadAllSurvivesSignalsWhileThePipeIsEmpty) {
  Pipe pipe = MakePipe();
  Result<std::string> read = std::string("unset");
  std::thread reader([&] { read = ReadAll(pipe.read_end.get(), 100); });
  Interrupter interrupter(reader.native_handle());
  const bool interrupted = Interrupter::WaitForSignals(20);
  EXPECT_TRUE(WriteAll(pipe.write_end.get(), "late").ok());
  pipe.write_end.Reset();
  interrupter.Stop();
  reader.join();
  EXPECT_TRUE(interrupted);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(*read, "late");
}

TEST(IoTest, WriteAllWithCarriesOnAfterShortWritesAndEintr) {
  Pipe pipe = MakePipe();
  int calls = 0;
  // Every other call is interrupted; the rest pass at most three bytes on.
  auto stingy = [&calls](int fd, const void* p, size_t n) -> ssize_t {
    if (++calls % 2 == 1) {
      errno = EINTR;
      return -1;
    }
    return ::write(fd, p, std::min<size_t>(n, 3));
  };
  ASSERT_TRUE(WriteAllWith(stingy, pipe.write_end.get(), "0123456789").ok());
  pipe.write_end.Reset();
  EXPECT_EQ(calls, 8);  // four writes of 3, 3, 3 and 1 bytes, each after an EINTR
  auto read = ReadAll(pipe.read_end.get(), 100);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(*read, "0123456789");
}

TEST(IoTest, WriteAllReportsTheErrno) {
  Pipe pipe = MakePipe();
  Status written = WriteAll(pipe.read_end.get(), "x");  // the read end takes no writes
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code, Errc::kIo);
  EXPECT_EQ(written.error().sys_errno, EBADF);
  EXPECT_EQ(written.error().message.rfind("write: ", 0), 0u) << written.error().message;
}

TEST(IoTest, ReadAllTakesExactlyTheCapAndRefusesOneByteMore) {
  for (size_t cap : {size_t{0}, size_t{10}, size_t{64 * 1024}, size_t{64 * 1024 + 1}}) {
    for (size_t size : {cap, cap + 1}) {
      Pipe pipe = MakePipe();
      std::thread writer([&] {
        EXPECT_TRUE(WriteAll(pipe.write_end.get(), Numbered(size)).ok());
        pipe.write_end.Reset();
      });
      auto read = ReadAll(pipe.read_end.get(), cap);
      writer.join();
      if (size == cap) {
        ASSERT_TRUE(read.ok()) << cap << ": " << read.error().message;
        EXPECT_TRUE(*read == Numbered(size)) << cap;
      } else {
        ASSERT_FALSE(read.ok()) << cap;
        EXPECT_EQ(read.error().code, Errc::kTooLarge);
        EXPECT_EQ(read.error().message, "larger than " + std::to_string(cap) + " bytes");
      }
    }
  }
}

TEST(IoTest, ReadAllWithoutACapReadsToEof) {
  Pipe pipe = MakePipe();
  ASSERT_TRUE(WriteAll(pipe.write_end.get(), "all of it").ok());
  pipe.write_end.Reset();
  auto read = ReadAll(pipe.read_end.get(), SIZE_MAX);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(*read, "all of it");
}

TEST(IoTest, ReadAllOfAnEmptyNonBlockingPipeFailsWithEagain) {
  Pipe pipe = MakePipe(O_NONBLOCK);
  auto read = ReadAll(pipe.read_end.get(), 100);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code, Errc::kIo);
  EXPECT_EQ(read.error().sys_errno, EAGAIN);
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

// Lowers the soft limit on open fds for its lifetime.
class NofileLimit {
 public:
  explicit NofileLimit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    struct rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  }
  ~NofileLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  struct rlimit saved_ {};
};

// top/d/d/d/... `depth` levels, each holding a file, an empty directory and a symlink
// to `outside`. Built with *at() calls: the paths are far longer than PATH_MAX.
void MakeDeepTree(const std::string& top, int depth, const std::string& outside) {
  ASSERT_EQ(::mkdir(top.c_str(), 0755), 0);
  UniqueFd dir(::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir);
  for (int i = 0; i < depth; ++i) {
    UniqueFd file(::openat(dir.get(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(file);
    ASSERT_EQ(::mkdirat(dir.get(), "e", 0755), 0);
    ASSERT_EQ(::symlinkat(outside.c_str(), dir.get(), "l"), 0);
    ASSERT_EQ(::mkdirat(dir.get(), "d", 0755), 0);
    dir = UniqueFd(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir);
  }
}

TEST(FileTest, RegressionRemoveTreeOfAThousandsDeepTreeNeedsFewFds) {
  TempDir dir;
  fs::create_directories(dir.path() + "/outside/sub");
  std::ofstream(dir.path() + "/outside/sub/keep") << "keep";
  MakeDeepTree(dir.path() + "/tree", 5000, dir.path() + "/outside");
  {
    NofileLimit limit(64);
    Status removed = RemoveTree(dir.path() + "/tree");
    ASSERT_TRUE(removed.ok()) << removed.error().message;
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/tree"));
  EXPECT_TRUE(fs::exists(dir.path() + "/outside/sub/keep")) << "a symlink was followed";
}

TEST(FileTest, RegressionRemoveTreeContentsOfAThousandsDeepTreeNeedsFewFds) {
  TempDir dir;
  fs::create_directories(dir.path() + "/outside");
  std::ofstream(dir.path() + "/outside/keep") << "keep";
  MakeDeepTree(dir.path() + "/tree", 5000, dir.path() + "/outside");
  UniqueFd top(::open((dir.path() + "/tree").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(top);
  {
    NofileLimit limit(64);
    Status removed = RemoveTreeContents(top.get());
    ASSERT_TRUE(removed.ok()) << removed.error().message;
  }
  EXPECT_TRUE(fs::is_directory(dir.path() + "/tree"));
  EXPECT_TRUE(fs::is_empty(dir.path() + "/tree"));
  EXPECT_TRUE(fs::exists(dir.path() + "/outside/keep"));
}

// In a child with a mount namespace of its own: a tmpfs mounted deep in the tree makes
// the removal fail, and nothing inside the mount is removed.
int RemoveTreeAcrossMount(const std::string& tree) {
  if (::unshare(CLONE_NEWNS) != 0) return 10;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
  const std::string mnt = tree + "/a/b/c/mnt";
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, nullptr) != 0) return 12;
  std::ofstream(mnt + "/keep") << "keep";
  if (RemoveTree(tree).ok()) return 1;
  if (!fs::exists(mnt + "/keep")) return 2;
  ::umount2(mnt.c_str(), MNT_DETACH);
  return 0;
}

TEST(FileTest, RemoveTreeNeverCrossesAMount) {
  TempDir dir;
  fs::create_directories(dir.path() + "/tree/a/b/c/mnt");
  std::ofstream(dir.path() + "/tree/a/b/file") << "x";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(RemoveTreeAcrossMount(dir.path() + "/tree"));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: removal succeeded, 2: the mount was emptied";
}

TEST(FileTest, MakeDirsGivesEachCreatedDirectoryItsMode) {
  TempDir dir;
  fs::create_directories(dir.path() + "/old");
  ::chmod((dir.path() + "/old").c_str(), 0755);
  mode_t saved = ::umask(077);
  Status made = MakeDirs(dir.path() + "/old/a/b", 0710);
  ::umask(saved);
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto mode = [&](const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(::stat((dir.path() + rel).c_str(), &st), 0) << rel;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode("/old"), 0755u) << "an existing directory is left as it is";
  EXPECT_EQ(mode("/old/a"), 0710u);
  EXPECT_EQ(mode("/old/a/b"), 0710u);
  ASSERT_TRUE(MakeDirs(dir.path() + "/old/a/b", 0700).ok()) << "existing path is success";
  EXPECT_EQ(mode("/old/a/b"), 0710u);
  std::ofstream(dir.path() + "/file") << "x";
  EXPECT_FALSE(MakeDirs(dir.path() + "/file/sub", 0700).ok());
}

}  // namespace
}  // namespace faas
