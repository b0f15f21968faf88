// Tests for faas::image::ImportImage. Run as root (ownership is checked).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "archive_builder.h"
#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
#include "image/config.h"
#include "image/importer.h"
#include "image/layer.h"
#include "image/layer_store.h"
#include "image/user.h"
#include "image/workdir.h"

namespace faas::image {
namespace {

using faas::testing::BuildDocker25Archive;
using faas::testing::BuildDockerArchive;
using faas::testing::BuildOciArchive;
using faas::testing::BuildPodmanArchive;
using faas::testing::Compression;
using faas::testing::Digest;
using faas::testing::ImageOptions;
using faas::testing::Layer;
using faas::testing::MakeLayer;
using faas::testing::Sha256Hex;
using faas::testing::TarBuilder;
using faas::testing::TarEntry;
using nlohmann::json;

std::set<std::string> ListDir(const std::string& path) {
  std::set<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return names;
  while (dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  ::closedir(dir);
  return names;
}

class ImageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    char tmpl[] = "/tmp/faas-image-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    work_ = base_ + "/work";
    rootfs_ = base_ + "/rootfs";
    sentinel_ = base_ + "/sentinel";
    for (const std::string& dir : {work_, rootfs_, sentinel_}) {
      ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    }
  }

  void TearDown() override {
    ExpectNothingOutside();
    EXPECT_TRUE(RemoveTree(base_).ok());
  }

  // Feeds `archive` through a pipe from another thread: the importer sees a stream.
  Result<ImageConfig> Import(const std::string& archive, const ImportLimits& limits = {}) {
    ClearDirs();
    return ImportTo(archive, work_, rootfs_, limits);
  }

  // Likewise into `rootfs` (made here) through `store`, spooling in `work` (made here).
  Result<ImageConfig> ImportTo(const std::string& archive, const std::string& work,
                               const std::string& rootfs, const ImportLimits& limits = {},
                               LayerStore* store = nullptr) {
    for (const std::string& dir : {work, rootfs}) {
      if (::mkdir(dir.c_str(), 0755) != 0) {
        EXPECT_EQ(errno, EEXIST) << dir;
      }
    }
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    UniqueFd read_end(fds[0]);
    std::thread writer([fd = fds[1], &archive] {
      (void)WriteAll(fd, archive);  // fails with EPIPE once the importer gave up
      ::close(fd);
    });
    auto result = ImportImage(read_end.get(), work, rootfs, limits, &stats_, store);
    read_end.Reset();
    writer.join();
    return result;
  }

  // Expects failure with `code`, a message containing `needle`, and nothing escaped.
  void ExpectRejected(const std::string& archive, Errc code, const std::string& needle,
                      const ImportLimits& limits = {}) {
    auto result = Import(archive, limits);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code, code) << result.error().message;
    EXPECT_NE(result.error().message.find(needle), std::string::npos) << result.error().message;
    ExpectNothingOutside();
  }

  void ExpectNothingOutside() {
    EXPECT_EQ(ListDir(sentinel_), std::set<std::string>{});
    EXPECT_EQ(ListDir(base_), (std::set<std::string>{"work", "rootfs", "sentinel"}));
  }

  // Empties work and rootfs, so that one test may import several times.
  void ClearDirs() {
    for (const std::string& dir : {work_, rootfs_}) {
      UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      ASSERT_TRUE(fd.valid());
      ASSERT_TRUE(RemoveTreeContents(fd.get()).ok());
    }
  }

  std::string Path(const std::string& rel) const {
    return rel.front() == '/' ? rel : rootfs_ + "/" + rel;
  }

  std::string Read(const std::string& rel) const {
    std::ifstream in(Path(rel), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  bool Exists(const std::string& rel) const {
    struct stat st;
    return ::lstat(Path(rel).c_str(), &st) == 0;
  }

  struct stat Lstat(const std::string& rel) const {
    struct stat st = {};
    EXPECT_EQ(::lstat(Path(rel).c_str(), &st), 0) << rel;
    return st;
  }

  std::string ReadLink(const std::string& rel) const {
    char buf[4096];
    ssize_t n = ::readlink(Path(rel).c_str(), buf, sizeof buf);
    return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
  }

  std::string base_, work_, rootfs_, sentinel_;
  ImportStats stats_;
};

std::vector<Layer> OneLayer(const TarBuilder& tar, Compression c = Compression::kNone) {
  return {MakeLayer(tar, c)};
}

ImageOptions WithRunConfig(json run_config) {
  ImageOptions options;
  options.run_config = std::move(run_config);
  return options;
}

// ---------------------------------------------------------------------------
// Unpacking

TEST_F(ImageTest, SimpleImage) {
  TarBuilder tar;
  tar.Dir("bin").File("bin/hello", "#!/bin/sh\necho hi\n", 0755);
  tar.last().uid = 1000;
  tar.last().gid = 1001;
  tar.File("etc/motd", "welcome\n");
  auto result = Import(BuildDockerArchive(OneLayer(tar), WithRunConfig({{"Cmd", {"/bin/hello"}}})));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, std::vector<std::string>{"/bin/hello"});
  EXPECT_EQ(Read("bin/hello"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(Read("etc/motd"), "welcome\n");
  struct stat st = Lstat("bin/hello");
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  EXPECT_EQ(st.st_mtime, 1700000000);
  EXPECT_EQ(stats_.layers, 1u);
  EXPECT_EQ(stats_.files, 3u);
  EXPECT_EQ(stats_.rootfs_bytes, 18u + 8u);
  EXPECT_GT(stats_.input_bytes, 0u);
}

// The image ID docker and podman show: the sha256 of the config blob, whichever format.
TEST_F(ImageTest, ConfigDigestIsTheImageId) {
  TarBuilder tar;
  tar.File("handler", "x", 0755);
  using Builder = std::string (*)(const std::vector<Layer>&, const ImageOptions&);
  for (Builder build :
       {&BuildDockerArchive, &BuildPodmanArchive, &BuildDocker25Archive, &BuildOciArchive}) {
    nlohmann::json config;
    ImageOptions options = WithRunConfig({{"Cmd", {"/handler"}}});
    options.edit_config = [&config](nlohmann::json& c) { config = c; };
    auto result = Import(build(OneLayer(tar), options));
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(result->digest, Digest(config.dump()));
  }
}

TEST_F(ImageTest, MultiLayerOverwrite) {
  TarBuilder lower;
  lower.File("a", "one").File("dir-becomes-file/x", "x").File("file-becomes-dir", "f");
  lower.Symlink("link-becomes-file", sentinel_ + "/victim");
  TarBuilder upper;
  upper.File("a", "two").File("dir-becomes-file", "now a file");
  upper.Dir("file-becomes-dir").File("file-becomes-dir/y", "y");
  upper.File("link-becomes-file", "replaced, not written through");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("a"), "two");
  EXPECT_EQ(Read("dir-becomes-file"), "now a file");
  EXPECT_TRUE(S_ISDIR(Lstat("file-becomes-dir").st_mode));
  EXPECT_EQ(Read("file-becomes-dir/y"), "y");
  EXPECT_TRUE(S_ISREG(Lstat("link-becomes-file").st_mode));
  EXPECT_EQ(stats_.layers, 2u);
}

TEST_F(ImageTest, DirectoryStructure) {
  TarBuilder tar;
  tar.Dir("usr").Dir("usr/lib", 0750).Dir("tmp", 01777);
  tar.last().mtime = 1600000000;  // must survive children created after it
  tar.File("tmp/child", "c");
  tar.File("usr/lib/deep/er/file", "implicit parents");  // parents not listed
  tar.File("usr/bin/su", "suid", 04755);
  tar.last().uid = 1000;  // chown must not clear the setuid bit we set after it
  tar.Dir("usr", 0711);   // directory over directory: contents kept, metadata updated
  tar.Fifo("run-fifo");
  auto result = Import(BuildDockerArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("usr/lib/deep/er/file"), "implicit parents");
  EXPECT_EQ(Lstat("usr/lib").st_mode & 07777, 0750u);
  EXPECT_EQ(Lstat("usr").st_mode & 07777, 0711u);
  EXPECT_EQ(Lstat("tmp").st_mode & 07777, 01777u);
  EXPECT_EQ(Lstat("tmp").st_mtime, 1600000000);
  EXPECT_EQ(Lstat("usr/lib").st_mtime, 1700000000);
  EXPECT_EQ(Lstat("usr/bin/su").st_mode & 07777, 04755u);
  EXPECT_EQ(Lstat("usr/bin/su").st_uid, 1000u);
  EXPECT_TRUE(S_ISFIFO(Lstat("run-fifo").st_mode));
}

TEST_F(ImageTest, SparseFile) {
  TarEntry entry;
  entry.path = "sparse";
  entry.data = std::string(1 << 20, '\0');
  entry.data.replace(0, 5, "start");
  entry.data.replace((1 << 20) - 3, 3, "end");
  entry.sparse = {{0, 4096}, {(1 << 20) - 4096, 4096}};
  TarBuilder tar;
  tar.Add(entry);
  auto result = Import(BuildDockerArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("sparse"), entry.data);
}

TEST_F(ImageTest, Utf8Names) {
  TarBuilder tar;
  tar.File("caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac", "utf8").Symlink("l\xc3\xbc", "caf\xc3\xa9");
  auto result = Import(BuildOciArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac"), "utf8");
  EXPECT_EQ(ReadLink("l\xc3\xbc"), "caf\xc3\xa9");
}

TEST_F(ImageTest, OpaqueAtTheTop) {
  TarBuilder lower, upper;
  lower.File("a", "a").File("d/b", "b");
  upper.Opaque("").File("c", "c");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(ListDir(rootfs_), std::set<std::string>{"c"});
}

TEST_F(ImageTest, NonBlockingPipe) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd read_end(fds[0]);
  std::string archive =
      BuildDockerArchive(OneLayer(TarBuilder().File("f", std::string(1 << 20, 'f'))));
  std::thread writer([fd = fds[1], &archive] {
    ::fcntl(fd, F_SETFL, 0);  // the writer blocks; only the reader's end is non-blocking
    (void)WriteAll(fd, archive);
    ::close(fd);
  });
  auto result = ImportImage(read_end.get(), work_, rootfs_, {}, &stats_);
  read_end.Reset();
  writer.join();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(stats_.input_bytes, archive.size());  // read to the end
}

TEST_F(ImageTest, EmptyLayers) {
  // A tar with no entries, a zero-byte blob, and gzip of nothing.
  auto result = Import(
      BuildOciArchive({MakeLayer(TarBuilder()), Layer{"", Compression::kNone},
                       Layer{"", Compression::kGzip}, MakeLayer(TarBuilder().File("f", "x"))}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("f"), "x");
  EXPECT_EQ(stats_.layers, 4u);
}

TEST_F(ImageTest, RootEntryIsAccepted) {
  TarBuilder tar;
  tar.Dir("./").Dir("/").File("./etc/x", "x");
  auto result = Import(BuildDockerArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("etc/x"), "x");
}

// ---------------------------------------------------------------------------
// Image config

TEST_F(ImageTest, Cmd) {
  auto result = Import(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")),
                                          WithRunConfig({{"Cmd", {"python3", "app.py"}}})));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, (std::vector<std::string>{"python3", "app.py"}));
}

TEST_F(ImageTest, EntrypointPlusCmd) {
  auto result = Import(
      BuildDockerArchive(OneLayer(TarBuilder().File("f", "")),
                         WithRunConfig({{"Entrypoint", {"/entry", "-v"}}, {"Cmd", {"serve"}}})));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, (std::vector<std::string>{"/entry", "-v", "serve"}));
}

TEST_F(ImageTest, EntrypointWithNullCmd) {
  auto result =
      Import(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")),
                                WithRunConfig({{"Entrypoint", {"/e"}}, {"Cmd", nullptr}})));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, std::vector<std::string>{"/e"});
}

TEST_F(ImageTest, NoCmdDefaultsToShell) {
  auto result = Import(BuildDockerArchive(OneLayer(TarBuilder().File("f", ""))));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_TRUE(result->env.empty());
  EXPECT_EQ(result->working_dir, "");
}

TEST_F(ImageTest, EnvWorkingDirUser) {
  auto result = Import(BuildDockerArchive(
      OneLayer(TarBuilder().File("f", "")),
      WithRunConfig(
          {{"Env", {"PATH=/usr/bin", "A=b=c"}}, {"WorkingDir", "/app"}, {"User", "1000:1000"}})));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->env, (std::vector<std::string>{"PATH=/usr/bin", "A=b=c"}));
  EXPECT_EQ(result->working_dir, "/app");
  EXPECT_EQ(result->user, "1000:1000");
}

TEST_F(ImageTest, RegressionEnvWithNulOrNewlineInTheKeyIsABadImage) {
  const std::pair<std::string, std::string> bad[] = {
      {R"({"config":{"Env":["A=x\u0000y"]}})",
       "image config: config.Env: invalid env 'A=x\\x00y': it contains a NUL byte"},
      {R"({"config":{"Env":["PATH=/bin","A\nB=1"]}})",
       "image config: config.Env: invalid env 'A\\x0aB=1': the key contains a control "
       "character"},
      {R"({"config":{"Env":["=1"]}})",
       "image config: config.Env: invalid env '=1': the key is "
       "empty"},
      {R"({"config":{"Env":["NOEQUALS"]}})",
       "image config: config.Env: invalid env 'NOEQUALS': expected KEY=VALUE"},
  };
  for (const auto& [json, message] : bad) {
    auto parsed = ParseImageConfig(json);
    ASSERT_FALSE(parsed.ok()) << json;
    EXPECT_EQ(parsed.error().code, Errc::kBadImage) << json;
    EXPECT_EQ(parsed.error().message, message);
  }
  auto multiline = ParseImageConfig(R"({"config":{"Env":["PEM=a\nb"]}})");
  ASSERT_TRUE(multiline.ok()) << multiline.error().message;
  EXPECT_EQ(multiline->config.env, std::vector<std::string>{"PEM=a\nb"});
}

TEST_F(ImageTest, ConfigParserRejectsWrongTypes) {
  EXPECT_EQ(ParseImageConfig(R"({"config":{"Cmd":"/bin/sh -c x"}})").error().code, Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig(R"({"config":{"Env":[1,2]}})").error().code, Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig(R"({"config":{"WorkingDir":["/"]}})").error().code, Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig(R"({"config":[]})").error().code, Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig(R"({"rootfs":{"diff_ids":["md5:00"]}})").error().code,
            Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig("[]").error().code, Errc::kBadImage);
  EXPECT_EQ(ParseImageConfig(std::string(100, '[') + std::string(100, ']')).error().code,
            Errc::kBadImage);
  auto ok = ParseImageConfig(R"({"config":null})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->config.cmd, std::vector<std::string>{"/bin/sh"});
}

TEST_F(ImageTest, WrongCmdTypeInImageIsBadImage) {
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")),
                                    WithRunConfig({{"Cmd", "/bin/sh -c x"}})),
                 Errc::kBadImage, "config.Cmd");
}

// ---------------------------------------------------------------------------
// Whiteouts and links

TEST_F(ImageTest, WhiteoutFile) {
  TarBuilder lower;
  lower.File("keep", "k").File("gone", "g").File("dir/sub/file", "f").File("dir2/x", "x");
  TarBuilder upper;
  upper.Whiteout("", "gone").Whiteout("dir", "sub").Whiteout("", "never-existed");
  upper.Whiteout("missing-dir", "x");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_TRUE(Exists("keep"));
  EXPECT_FALSE(Exists("gone"));
  EXPECT_TRUE(Exists("dir"));
  EXPECT_FALSE(Exists("dir/sub"));
  EXPECT_FALSE(Exists(".wh.gone"));
  EXPECT_TRUE(Exists("dir2/x"));
}

TEST_F(ImageTest, WhiteoutOnlyHidesLowerLayers) {
  TarBuilder lower;
  lower.File("f", "lower");
  TarBuilder upper;
  upper.File("f", "same layer").Whiteout("", "f");  // whiteout after the file, same layer
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("f"), "same layer");
}

TEST_F(ImageTest, OpaqueDirectory) {
  TarBuilder lower;
  lower.File("d/old1", "1").File("d/sub/old2", "2").File("other/keep", "k");
  TarBuilder upper;
  upper.File("d/before", "b");  // same layer, before the marker: kept
  upper.Opaque("d");
  upper.File("d/after", "a");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(ListDir(Path("d")), (std::set<std::string>{"before", "after"}));
  EXPECT_TRUE(Exists("other/keep"));
}

TEST_F(ImageTest, Hardlinks) {
  TarBuilder lower;
  lower.File("lower-file", "shared from below");
  TarBuilder upper;
  upper.File("bin/busybox", "bb", 0755).Hardlink("bin/ls", "bin/busybox");
  upper.Hardlink("./bin/cat", "./bin/busybox").Hardlink("up-link", "lower-file");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  struct stat a = Lstat("bin/busybox");
  EXPECT_EQ(Lstat("bin/ls").st_ino, a.st_ino);
  EXPECT_EQ(Lstat("bin/cat").st_ino, a.st_ino);
  EXPECT_EQ(a.st_nlink, 6u) << "three names in the tree, three in the stored layer";
  EXPECT_EQ(Lstat("up-link").st_ino, Lstat("lower-file").st_ino);
}

TEST_F(ImageTest, SymlinksKeptAsData) {
  TarBuilder tar;
  tar.File("usr/lib/libc.so", "libc");
  tar.Symlink("lib", "usr/lib");
  tar.Symlink("abs", "/etc/passwd");
  tar.Symlink("up", "../../../../" + sentinel_);
  tar.Symlink("dangling", "no/such/file");
  tar.File("lib/via-link", "written through an in-root relative symlink");
  auto result = Import(BuildDockerArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_TRUE(S_ISLNK(Lstat("lib").st_mode));
  EXPECT_EQ(ReadLink("lib"), "usr/lib");
  EXPECT_EQ(ReadLink("abs"), "/etc/passwd");
  EXPECT_EQ(ReadLink("up"), "../../../../" + sentinel_);
  EXPECT_EQ(ReadLink("dangling"), "no/such/file");
  EXPECT_EQ(Read("usr/lib/via-link"), "written through an in-root relative symlink");
}

// ---------------------------------------------------------------------------
// Compression and formats

TEST_F(ImageTest, GzipLayers) {
  TarBuilder a, b;
  a.File("a", "from gzip");
  b.File("b", "also gzip");
  auto result = Import(
      BuildDockerArchive({MakeLayer(a, Compression::kGzip), MakeLayer(b, Compression::kGzip)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("a"), "from gzip");
  EXPECT_EQ(Read("b"), "also gzip");
}

TEST_F(ImageTest, ZstdLayers) {
  TarBuilder a;
  a.File("z", std::string(100000, 'z'));
  auto result = Import(BuildOciArchive({MakeLayer(a, Compression::kZstd)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("z"), std::string(100000, 'z'));
}

TEST_F(ImageTest, CompressedOuterArchive) {
  for (Compression c : {Compression::kGzip, Compression::kZstd}) {
    ImageOptions options;
    options.outer = c;
    TarBuilder tar;
    tar.File("outer", "compressed");
    auto result = Import(BuildDockerArchive(OneLayer(tar), options));
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(Read("outer"), "compressed");
    ASSERT_TRUE(
        RemoveTreeContents(UniqueFd(::open(rootfs_.c_str(), O_RDONLY | O_CLOEXEC)).get()).ok());
    ASSERT_TRUE(
        RemoveTreeContents(UniqueFd(::open(work_.c_str(), O_RDONLY | O_CLOEXEC)).get()).ok());
  }
}

struct FormatCase {
  const char* name;
  std::string (*build)(const std::vector<Layer>&, const ImageOptions&);
  bool nested;
};

class ImageFormatTest : public ImageTest, public ::testing::WithParamInterface<FormatCase> {};

TEST_P(ImageFormatTest, TwoLayersWithCmd) {
  TarBuilder lower, upper;
  lower.File("etc/os-release", "ID=test\n").File("old", "o");
  upper.File("app/main", "run me", 0755).Whiteout("", "old");
  ImageOptions options = WithRunConfig({{"Cmd", {"/app/main"}}, {"Env", {"X=1"}}});
  options.nested_index = GetParam().nested;
  auto result = Import(GetParam().build(
      {MakeLayer(lower, Compression::kGzip), MakeLayer(upper, Compression::kNone)}, options));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->cmd, std::vector<std::string>{"/app/main"});
  EXPECT_EQ(result->env, std::vector<std::string>{"X=1"});
  EXPECT_EQ(Read("etc/os-release"), "ID=test\n");
  EXPECT_EQ(Read("app/main"), "run me");
  EXPECT_FALSE(Exists("old"));
}

INSTANTIATE_TEST_SUITE_P(Formats, ImageFormatTest,
                         ::testing::Values(FormatCase{"DockerLegacy", BuildDockerArchive, false},
                                           FormatCase{"Podman", BuildPodmanArchive, false},
                                           FormatCase{"Docker25", BuildDocker25Archive, false},
                                           FormatCase{"Oci", BuildOciArchive, false},
                                           FormatCase{"OciNestedIndex", BuildOciArchive, true}),
                         [](const ::testing::TestParamInfo<FormatCase>& info) {
                           return info.param.name;
                         });

TEST_F(ImageTest, ManifestJsonPreferredOverIndex) {
  // Docker >= 25 has both; a broken index.json proves manifest.json was used.
  ImageOptions options;
  options.extra = [](TarBuilder& tar) { tar.File("index.json", "{broken"); };
  TarBuilder tar;
  tar.File("f", "x");
  auto result = Import(BuildDocker25Archive(OneLayer(tar), options));
  ASSERT_TRUE(result.ok()) << result.error().message;
}

TEST_F(ImageTest, SeekableFileInput) {
  TarBuilder tar;
  tar.File("f", "from a file");
  std::string path = work_ + "/../input.tar";
  faas::testing::WriteFileOrDie(path, BuildDockerArchive(OneLayer(tar)));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  auto result = ImportImage(fd.get(), work_, rootfs_, {}, nullptr);
  ::unlink(path.c_str());
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Read("f"), "from a file");
}

TEST_F(ImageTest, ConcurrentImports) {
  std::vector<std::string> dirs;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    std::string work = work_ + "/w" + std::to_string(i);
    std::string root = rootfs_ + "/r" + std::to_string(i);
    ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
    threads.emplace_back([work, root, i, &ok] {
      TarBuilder tar;
      tar.File("id", std::to_string(i));
      std::string archive = BuildOciArchive({MakeLayer(tar, Compression::kGzip)});
      std::string path = work + "/in.tar";
      faas::testing::WriteFileOrDie(path, archive);
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      auto result = ImportImage(fd.get(), work, root, {}, nullptr);
      if (result.ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Read("r" + std::to_string(i) + "/id"), std::to_string(i));
}

// ---------------------------------------------------------------------------
// Refused input

TEST_F(ImageTest, MissingManifest) {
  ExpectRejected(TarBuilder().File("hello.txt", "not an image").Build(), Errc::kBadImage,
                 "no manifest.json or index.json in archive");
}

TEST_F(ImageTest, EmptyInput) {
  ExpectRejected("", Errc::kBadImage, "empty image: no bytes received");
}

TEST_F(ImageTest, NotATar) {
  ExpectRejected(std::string(4096, 'x'), Errc::kBadImage, "not a valid image archive");
}

TEST_F(ImageTest, DigestMismatchDockerDiffId) {
  ImageOptions options;
  options.edit_config = [](json& config) {
    config["rootfs"]["diff_ids"][0] = Digest("something else");
  };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "x")), options),
                 Errc::kBadImage, "digest mismatch");
  EXPECT_FALSE(Exists("f"));  // nothing of the layer is written before its digest is checked
}

TEST_F(ImageTest, DigestMismatchOciBlob) {
  TarBuilder tar;
  tar.File("f", "x");
  Layer layer = MakeLayer(tar, Compression::kGzip);
  ImageOptions options;
  options.extra = [&layer](TarBuilder& outer) {
    // Same blob name, other content: the later member wins, and must be refused.
    outer.File("blobs/sha256/" + Sha256Hex(layer.Blob()),
               faas::testing::Compress(TarBuilder().File("evil", "e").Build(), Compression::kGzip));
  };
  ExpectRejected(BuildOciArchive({layer}, options), Errc::kBadImage, "digest mismatch");
  ExpectRejected(BuildDocker25Archive({layer}, options), Errc::kBadImage, "digest mismatch");
}

TEST_F(ImageTest, DiffIdCountMismatch) {
  ImageOptions options;
  options.edit_config = [](json& config) { config["rootfs"]["diff_ids"] = json::array(); };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "x")), options),
                 Errc::kBadImage, "diff_ids");
}

struct MaliciousCase {
  const char* name;
  std::function<void(TarBuilder&, const std::string& sentinel)> lower;  // may be empty
  std::function<void(TarBuilder&, const std::string& sentinel)> layer;
  const char* message;
};

class MaliciousLayerTest : public ImageTest, public ::testing::WithParamInterface<MaliciousCase> {};

TEST_P(MaliciousLayerTest, RefusedAndNothingEscapes) {
  std::vector<Layer> layers;
  if (GetParam().lower) {
    TarBuilder lower;
    GetParam().lower(lower, sentinel_);
    layers.push_back(MakeLayer(lower));
  }
  TarBuilder tar;
  GetParam().layer(tar, sentinel_);
  layers.push_back(MakeLayer(tar));
  ExpectRejected(BuildDockerArchive(layers), Errc::kBadImage, GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Layers, MaliciousLayerTest,
    ::testing::Values(
        MaliciousCase{"DotDotEntry", nullptr,
                      [](TarBuilder& t, const std::string&) { t.File("../sentinel/evil", "x"); },
                      "path escapes the root"},
        MaliciousCase{
            "DotDotInTheMiddle", nullptr,
            [](TarBuilder& t, const std::string&) { t.File("a/../../sentinel/evil", "x"); },
            "path escapes the root"},
        MaliciousCase{"AbsolutePath", nullptr,
                      [](TarBuilder& t, const std::string& s) { t.File(s + "/evil", "x"); },
                      "absolute path"},
        MaliciousCase{"SymlinkDotDotThenWrite", nullptr,
                      [](TarBuilder& t, const std::string&) {
                        t.Symlink("a", "..").File("a/sentinel/evil", "x");
                      },
                      "path escapes the root"},
        MaliciousCase{
            "SymlinkAbsoluteThenWrite", nullptr,
            [](TarBuilder& t, const std::string& s) { t.Symlink("a", s).File("a/evil", "x"); },
            "path escapes the root"},
        MaliciousCase{"SymlinkFromLowerLayerThenWrite",
                      [](TarBuilder& t, const std::string& s) { t.Symlink("a", s); },
                      [](TarBuilder& t, const std::string&) { t.File("a/evil", "x"); },
                      "path escapes the root"},
        MaliciousCase{"SymlinkThenDirectory", nullptr,
                      [](TarBuilder& t, const std::string& s) { t.Symlink("a", s).Dir("a/evil"); },
                      "path escapes the root"},
        MaliciousCase{"SymlinkThenHardlinkTarget", nullptr,
                      [](TarBuilder& t, const std::string&) {
                        t.Symlink("a", "../../../../../etc").Hardlink("stolen", "a/passwd");
                      },
                      "path escapes the root"},
        MaliciousCase{"HardlinkDotDot", nullptr,
                      [](TarBuilder& t, const std::string&) { t.Hardlink("x", "../x"); },
                      "path escapes the root"},
        MaliciousCase{"HardlinkAbsolute", nullptr,
                      [](TarBuilder& t, const std::string&) { t.Hardlink("x", "/etc/passwd"); },
                      "absolute path"},
        MaliciousCase{
            "DeviceThroughSymlink", nullptr,
            [](TarBuilder& t, const std::string& s) { t.Symlink("dev", s).CharDevice("dev/null"); },
            "path escapes the root"},
        MaliciousCase{"WhiteoutDotDot",
                      [](TarBuilder& t, const std::string&) { t.File("a/b", "x"); },
                      [](TarBuilder& t, const std::string&) { t.File("a/.wh...", ""); },
                      "path escapes the root"},
        MaliciousCase{"WhiteoutDot", nullptr,
                      [](TarBuilder& t, const std::string&) { t.File("a/.wh..", ""); }, "whiteout"},
        MaliciousCase{"WhiteoutInDotDotDir", nullptr,
                      [](TarBuilder& t, const std::string&) { t.File("../sentinel/.wh.x", ""); },
                      "path escapes the root"},
        MaliciousCase{"OpaqueThroughSymlink",
                      [](TarBuilder& t, const std::string&) { t.Symlink("a", "../sentinel"); },
                      [](TarBuilder& t, const std::string&) { t.Opaque("a/x"); },
                      "path escapes the root"}),
    [](const ::testing::TestParamInfo<MaliciousCase>& info) { return info.param.name; });

TEST_F(ImageTest, WhiteoutThroughSymlinkDoesNotDeleteOutside) {
  ASSERT_EQ(::mkdir((base_ + "/outside").c_str(), 0755), 0);
  faas::testing::WriteFileOrDie(base_ + "/outside/precious", "keep me");
  TarBuilder lower, upper;
  lower.Symlink("a", base_ + "/outside");
  upper.Whiteout("a", "precious");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  EXPECT_FALSE(result.ok());
  std::ifstream in(base_ + "/outside/precious");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "keep me");
  ASSERT_TRUE(RemoveTree(base_ + "/outside").ok());
}

// ---------------------------------------------------------------------------
// Device nodes: never created, counted, and nothing left at their paths

// Block and character devices anywhere under `root` (symlinks not followed).
size_t DeviceNodes(const std::string& root) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    auto type = e.symlink_status().type();
    n += type == std::filesystem::file_type::block || type == std::filesystem::file_type::character;
  }
  return n;
}

TarBuilder& BlockDevice(TarBuilder& tar, std::string path) {
  TarEntry e;
  e.type = TarEntry::Type::kBlockDevice;
  e.path = std::move(path);
  return tar.Add(std::move(e));
}

TEST_F(ImageTest, DeviceNodesAreSkippedAndCounted) {
  TarBuilder tar;
  tar.Dir("dev").CharDevice("dev/console").CharDevice("./dev/null");
  BlockDevice(tar, "dev/sda").File("handler", "h", 0755).Fifo("dev/initctl");
  auto result = Import(BuildDockerArchive(OneLayer(tar)));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(stats_.skipped_devices, 3u);
  EXPECT_EQ(stats_.first_skipped_device, "/dev/console");
  EXPECT_EQ(stats_.files, 6u);
  EXPECT_EQ(ListDir(Path("dev")), std::set<std::string>{"initctl"});  // FIFOs are kept
  EXPECT_EQ(Read("handler"), "h");
  EXPECT_EQ(DeviceNodes(rootfs_), 0u);
  EXPECT_EQ(SkippedSummary(stats_),
            "skipped 3 device node(s), the first /dev/console: containers get their devices "
            "from the runtime");
}

TEST_F(ImageTest, NothingSkippedNothingSaid) {
  TarBuilder tar;
  tar.File("handler", "h", 0755);
  ASSERT_TRUE(Import(BuildDockerArchive(OneLayer(tar))).ok());
  EXPECT_EQ(stats_.skipped_devices, 0u);
  EXPECT_EQ(stats_.first_skipped_device, "");
  EXPECT_EQ(SkippedSummary(stats_), "");
}

TEST_F(ImageTest, SkippedDeviceCreatesNoParents) {
  TarBuilder tar;
  tar.CharDevice("a/b/null");
  ASSERT_TRUE(Import(BuildDockerArchive(OneLayer(tar))).ok());
  EXPECT_EQ(stats_.skipped_devices, 1u);
  EXPECT_EQ(stats_.first_skipped_device, "/a/b/null");
  EXPECT_EQ(ListDir(rootfs_), std::set<std::string>{});
}

TEST_F(ImageTest, SkippedDeviceReplacesWhatWasAtItsPath) {
  TarBuilder lower;
  lower.File("dev/null", "lower").File("dev/tty/x", "a directory's file").Symlink("dev/zero", "/x");
  TarBuilder upper;
  upper.File("dev/random", "same layer").CharDevice("dev/random");
  upper.CharDevice("dev/null").CharDevice("dev/tty").CharDevice("dev/zero");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(ListDir(Path("dev")), std::set<std::string>{});
  EXPECT_EQ(stats_.skipped_devices, 4u);
  EXPECT_EQ(stats_.first_skipped_device, "/dev/random");
}

TEST_F(ImageTest, HardlinksToSkippedDevicesAreSkippedToo) {
  TarBuilder lower;
  lower.File("dev/full", "lower file");
  TarBuilder upper;
  upper.CharDevice("dev/null").Hardlink("dev/null2", "dev/null").Hardlink("dev/null3", "dev/null2");
  upper.Hardlink("dev/full", "dev/null");  // replaces the lower file: nothing there
  upper.CharDevice("x").File("x", "a file").Hardlink("y", "x");  // x is a file again
  TarBuilder top;
  top.Hardlink("dev/later", "dev/null");  // a later layer links to the skipped device
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper), MakeLayer(top)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(ListDir(Path("dev")), std::set<std::string>{});
  EXPECT_EQ(stats_.skipped_devices, 6u);
  EXPECT_EQ(stats_.first_skipped_device, "/dev/null");
  EXPECT_EQ(Read("y"), "a file");
  EXPECT_EQ(Lstat("y").st_ino, Lstat("x").st_ino);
}

TEST_F(ImageTest, SkippedDeviceThenWhiteoutOrDirectoryInALaterLayer) {
  TarBuilder lower;
  lower.CharDevice("dev/tty").CharDevice("dev/ptmx").CharDevice("dev/console");
  TarBuilder upper;
  upper.Whiteout("dev", "tty").Dir("dev/ptmx").File("dev/ptmx/f", "f").File("dev/console", "c");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(ListDir(Path("dev")), (std::set<std::string>{"ptmx", "console"}));
  EXPECT_EQ(Read("dev/ptmx/f"), "f");
  EXPECT_EQ(Read("dev/console"), "c");
  EXPECT_EQ(DeviceNodes(rootfs_), 0u);
}

TEST_F(ImageTest, HardlinkToDeviceWhoseLinkAndPathWereReplacedIsALinkAgain) {
  TarBuilder lower;
  lower.CharDevice("dev/null");
  TarBuilder upper;
  upper.File("dev/null", "now a file").Hardlink("dev/link", "dev/null");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Lstat("dev/link").st_ino, Lstat("dev/null").st_ino);
  EXPECT_EQ(stats_.skipped_devices, 1u);
}

// Skipped paths are remembered up to a bound; a link to a device past it is refused
// cleanly, like any link to a missing target.
TEST_F(ImageTest, RememberedDevicePathsAreBounded) {
  TarBuilder tar;
  const std::string long_name(200, 'd');
  const size_t count =
      faas::image::kMaxDevicePathBytes / (long_name.size() + 5) + 2;  // each path is longer
  tar.Dir("dev");
  for (size_t i = 0; i < count; ++i) tar.CharDevice("dev/" + std::to_string(i) + long_name);
  tar.Hardlink("first", "dev/0" + long_name);
  tar.Hardlink("last", "dev/" + std::to_string(count - 1) + long_name);
  ExpectRejected(BuildDockerArchive(OneLayer(tar)), Errc::kBadImage,
                 "'last': hardlink target does not exist");
  EXPECT_FALSE(Exists("first"));
  EXPECT_EQ(DeviceNodes(rootfs_), 0u);
}

TEST_F(ImageTest, SkippedDeviceThroughSymlinkDoesNotDeleteOutside) {
  ASSERT_EQ(::mkdir((base_ + "/outside").c_str(), 0755), 0);
  faas::testing::WriteFileOrDie(base_ + "/outside/precious", "keep me");
  TarBuilder lower, upper;
  lower.Symlink("a", base_ + "/outside");
  upper.CharDevice("a/precious");
  auto result = Import(BuildDockerArchive({MakeLayer(lower), MakeLayer(upper)}));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("path escapes the root"), std::string::npos)
      << result.error().message;
  std::ifstream in(base_ + "/outside/precious");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "keep me");
  ASSERT_TRUE(RemoveTree(base_ + "/outside").ok());
}

TEST_F(ImageTest, ErrorMessageNamesLayerAndEntry) {
  TarBuilder good, bad;
  good.File("ok", "ok");
  bad.File("../etc/passwd", "x");
  auto result = Import(BuildDockerArchive({MakeLayer(good), MakeLayer(bad)}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, Errc::kBadImage);
  std::string expected = "layer 2 (sha256:" + Sha256Hex(bad.Build()).substr(0, 12) +
                         "): entry '../etc/passwd': path escapes the root";
  EXPECT_EQ(result.error().message, expected);
}

TEST_F(ImageTest, ManifestLayerPathEscapes) {
  ImageOptions options;
  options.edit_manifest = [](json& m) { m[0]["Layers"][0] = "../../etc/passwd"; };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "escapes the archive");
  options.edit_manifest = [](json& m) { m[0]["Layers"][0] = "/etc/passwd"; };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "escapes the archive");
}

TEST_F(ImageTest, ManifestConfigPathEscapes) {
  ImageOptions options;
  options.edit_manifest = [](json& m) { m[0]["Config"] = "a/../../config.json"; };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "escapes the archive");
}

TEST_F(ImageTest, ManifestWrongTypes) {
  ImageOptions options;
  options.edit_manifest = [](json& m) { m[0]["Layers"] = "layer.tar"; };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "Layers");
  options.edit_manifest = [](json& m) { m = json::object(); };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "manifest.json");
  options.edit_manifest = [](json& m) { m["layers"] = "x"; };
  ExpectRejected(BuildOciArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "OCI manifest");
  options.edit_manifest = [](json& m) { m["config"]["digest"] = 5; };
  ExpectRejected(BuildOciArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "descriptor has no digest");
  options.edit_manifest = [](json& m) { m["layers"][0]["digest"] = "sha512:00"; };
  ExpectRejected(BuildOciArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "unsupported digest");
}

TEST_F(ImageTest, HardlinkToDirectoryRefused) {
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().Dir("d").Hardlink("l", "d"))),
                 Errc::kBadImage, "hardlink to a directory");
}

TEST_F(ImageTest, OverlongNameIsBadImage) {
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File(std::string(300, 'n'), "x"))),
                 Errc::kBadImage, "File name too long");
}

TEST_F(ImageTest, PodmanLayerSymlinkOutsideArchive) {
  for (const char* target : {"../../etc/passwd", "/etc/passwd"}) {
    ImageOptions options;
    options.extra = [target](TarBuilder& tar) {
      // Replace the first layer's link (manifest.json points at it) by a hostile one.
      tar.Symlink("evil/layer.tar", target);
    };
    options.edit_manifest = [](json& m) { m[0]["Layers"][0] = "evil/layer.tar"; };
    ExpectRejected(BuildPodmanArchive(OneLayer(TarBuilder().File("f", "")), options),
                   Errc::kBadImage, "out of the archive");
  }
}

TEST_F(ImageTest, ArchiveSymlinkLoop) {
  ImageOptions options;
  options.extra = [](TarBuilder& tar) { tar.Symlink("x/layer.tar", "layer.tar"); };
  options.edit_manifest = [](json& m) { m[0]["Layers"][0] = "x/layer.tar"; };
  ExpectRejected(BuildPodmanArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "too many levels of links");
}

TEST_F(ImageTest, TruncatedGzipLayer) {
  TarBuilder tar;
  std::string big;
  for (int i = 0; i < 20000; ++i) big += std::to_string(i * 7919) + "\n";
  tar.File("big", big);
  Layer layer = MakeLayer(tar, Compression::kGzip);
  std::string blob = layer.Blob();
  std::string cut = blob.substr(0, blob.size() / 2);
  // The descriptor names the truncated blob, so its digest matches: the failure must
  // come from decompression.
  ImageOptions options;
  options.edit_manifest = [&cut](json& m) {
    m["layers"][0]["digest"] = Digest(cut);
    m["layers"][0]["size"] = cut.size();
  };
  options.extra = [&cut](TarBuilder& outer) { outer.File("blobs/sha256/" + Sha256Hex(cut), cut); };
  ExpectRejected(BuildOciArchive({layer}, options), Errc::kBadImage, "corrupt layer data");
}

TEST_F(ImageTest, TruncatedOuterArchive) {
  std::string archive =
      BuildDockerArchive(OneLayer(TarBuilder().File("f", std::string(8192, 'f'))));
  ExpectRejected(archive.substr(0, 3000), Errc::kBadImage, "not a valid image archive");
}

TEST_F(ImageTest, BadJson) {
  ImageOptions options;
  options.extra = [](TarBuilder& tar) { tar.File("manifest.json", "[{\"Config\": "); };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "invalid JSON");
  ImageOptions oci;
  oci.extra = [](TarBuilder& tar) { tar.File("index.json", "not json"); };
  ExpectRejected(BuildOciArchive(OneLayer(TarBuilder().File("f", "")), oci), Errc::kBadImage,
                 "invalid JSON");
}

TEST_F(ImageTest, BadConfigJsonUnderItsName) {
  // Legacy archives do not verify the config's name: garbage there must still be caught.
  ImageOptions options;
  options.edit_manifest = [](json& m) { m[0]["Config"] = "other.json"; };
  options.extra = [](TarBuilder& tar) { tar.File("other.json", "{\"config\": {\"Cmd\": [1"); };
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("f", "")), options), Errc::kBadImage,
                 "image config");
}

TEST_F(ImageTest, MaxFilesLimit) {
  TarBuilder tar;
  for (int i = 0; i < 20; ++i) tar.File("f" + std::to_string(i), "x");
  ImportLimits limits;
  limits.max_files = 10;
  ExpectRejected(BuildDockerArchive(OneLayer(tar)), Errc::kTooLarge, "more than 10 entries",
                 limits);
  EXPECT_TRUE(ListDir(rootfs_).empty());  // counted before anything of the layer is written
}

TEST_F(ImageTest, RegressionEntryDeeperThanTheLimitIsRefusedBeforeAnythingIsWritten) {
  std::string deep = "a";
  for (int i = 1; i < 2000; ++i) deep += "/a";
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File("ok", "x").File(deep, "x"))),
                 Errc::kBadImage, "path a/a/a/... is 2000 levels deep; the limit is 256");
  EXPECT_TRUE(ListDir(rootfs_).empty());
  std::string at_limit = "b";
  for (int i = 1; i < 8; ++i) at_limit += "/b";
  ImportLimits limits;
  limits.max_depth = 8;
  ASSERT_TRUE(Import(BuildDockerArchive(OneLayer(TarBuilder().File(at_limit, "x"))), limits).ok());
  ExpectRejected(BuildDockerArchive(OneLayer(TarBuilder().File(at_limit + "/c", "x"))),
                 Errc::kBadImage, "is 9 levels deep; the limit is 8", limits);
}

TEST_F(ImageTest, MaxRootfsBytesLimit) {
  TarBuilder tar;
  tar.File("big", std::string(100000, 'b'));
  ImportLimits limits;
  limits.max_rootfs_bytes = 50000;
  ExpectRejected(BuildDockerArchive(OneLayer(tar)), Errc::kTooLarge, "exceed", limits);
}

TEST_F(ImageTest, MaxImageBytesLimit) {
  TarBuilder tar;
  tar.File("big", std::string(1 << 20, 'b'));
  ImportLimits limits;
  limits.max_image_bytes = 256 * 1024;
  ExpectRejected(BuildDockerArchive(OneLayer(tar)), Errc::kTooLarge, "larger than", limits);
}

TEST_F(ImageTest, DecompressedOuterArchiveIsBounded) {
  // 4 MiB of zeros gzip to a few KiB: the spool must still stop at max_image_bytes.
  TarBuilder tar;
  tar.File("zeros", std::string(4 << 20, '\0'));
  ImageOptions options;
  options.outer = Compression::kGzip;
  std::string archive = BuildDockerArchive(OneLayer(tar), options);
  ImportLimits limits;
  limits.max_image_bytes = 1 << 20;
  ASSERT_LT(archive.size(), limits.max_image_bytes);
  ExpectRejected(archive, Errc::kTooLarge, "decompressed image archive", limits);
}

}  // namespace
}  // namespace faas::image

namespace faas::image {
namespace {

// ---------------------------------------------------------------------------
// Layers kept by diff_id and shared between trees

class LayerStoreTest : public ImageTest {
 protected:
  void SetUp() override {
    ImageTest::SetUp();
    store_ = std::make_unique<LayerStore>(work_ + "/layers");
    ASSERT_TRUE(store_->Open().ok());
  }

  // Imports `layers` as function `name`: its tree is work/NAME/rootfs.
  std::string Deploy(const std::string& name, const std::vector<Layer>& layers,
                     const ImportLimits& limits = {}) {
    const std::string dir = work_ + "/" + name;
    EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
    auto result =
        ImportTo(BuildPodmanArchive(layers), dir + "/spool", dir + "/rootfs", limits, store_.get());
    EXPECT_TRUE(result.ok()) << result.error().message;
    return dir + "/rootfs";
  }

  std::set<ino_t> Holders(std::initializer_list<std::string> trees) {
    std::set<ino_t> inodes;
    for (const std::string& tree : trees) inodes.insert(Lstat(tree).st_ino);
    return inodes;
  }

  std::set<std::string> StoredLayers() {
    std::set<std::string> layers;
    for (const std::string& name : ListDir(work_ + "/layers")) {
      if (name.rfind("sha256-", 0) == 0) layers.insert(name);
    }
    return layers;
  }

  std::string ReadAt(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::unique_ptr<LayerStore> store_;
};

TarBuilder BaseLayer() {
  TarBuilder base;
  base.Dir("bin").File("bin/tool", "the tool", 0755).Dir("etc").File("etc/conf", "conf");
  base.Dir("usr").Dir("usr/share").File("usr/share/doc", "doc");
  return base;
}

TEST_F(LayerStoreTest, TreesFromOneBaseShareItsFiles) {
  TarBuilder top1, top2;
  top1.File("app", "v1");
  top2.File("app", "v2");
  std::string a = Deploy("a", {MakeLayer(BaseLayer()), MakeLayer(top1)});
  std::string b = Deploy("b", {MakeLayer(BaseLayer()), MakeLayer(top2)});
  EXPECT_EQ(Lstat(a + "/bin/tool").st_ino, Lstat(b + "/bin/tool").st_ino);
  EXPECT_EQ(Lstat(a + "/usr/share/doc").st_ino, Lstat(b + "/usr/share/doc").st_ino);
  EXPECT_NE(Lstat(a + "/bin").st_ino, Lstat(b + "/bin").st_ino) << "directories are each tree's";
  EXPECT_EQ(ReadAt(a + "/app"), "v1");
  EXPECT_EQ(ReadAt(b + "/app"), "v2");
  EXPECT_EQ(StoredLayers().size(), 3u) << "the base once, each top layer";
  EXPECT_EQ(stats_.layers, 2u);
  EXPECT_EQ(stats_.files, 8u) << "a stored layer counts as when it was extracted";
  EXPECT_FALSE(ListDir(b + "/../spool").empty()) << "the config and manifest were spooled";
  for (const std::string& spooled : ListDir(b + "/../spool")) {
    EXPECT_NE(ReadAt(b + "/../spool/" + spooled), BaseLayer().Build())
        << "the member of the stored base layer is not spooled again";
  }
}

TEST_F(LayerStoreTest, AnotherTreesWhiteoutsAndReplacementsLeaveSharedFilesAlone) {
  std::string a = Deploy("a", {MakeLayer(BaseLayer())});
  const ino_t tool = Lstat(a + "/bin/tool").st_ino;
  TarBuilder upper;
  upper.Whiteout("etc", "conf").File("bin/tool", "replaced", 0700).Opaque("usr");
  upper.Dir("bin", 0700).last().mtime = 1;
  std::string b = Deploy("b", {MakeLayer(BaseLayer()), MakeLayer(upper)});
  EXPECT_FALSE(std::filesystem::exists(b + "/etc/conf"));
  EXPECT_FALSE(std::filesystem::exists(b + "/usr/share"));
  EXPECT_EQ(ReadAt(b + "/bin/tool"), "replaced");
  EXPECT_EQ(ReadAt(a + "/etc/conf"), "conf");
  EXPECT_EQ(ReadAt(a + "/usr/share/doc"), "doc");
  EXPECT_EQ(ReadAt(a + "/bin/tool"), "the tool");
  struct stat st = Lstat(a + "/bin/tool");
  EXPECT_EQ(st.st_ino, tool);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(Lstat(a + "/bin").st_mode & 07777, 0755u);
  EXPECT_NE(Lstat(a + "/bin").st_mtime, 1) << "the other tree's directory took the new times";
}

TEST_F(LayerStoreTest, LayersGoWithTheLastTreeUsingThem) {
  TarBuilder top;
  top.File("app", "v1");
  std::string a = Deploy("a", {MakeLayer(BaseLayer())});
  std::string b = Deploy("b", {MakeLayer(BaseLayer()), MakeLayer(top)});
  ASSERT_EQ(StoredLayers().size(), 2u);
  EXPECT_TRUE(store_->Collect([&] { return Holders({a, b}); }).empty());
  EXPECT_EQ(StoredLayers().size(), 2u) << "both in use";
  ASSERT_TRUE(RemoveTree(b).ok());
  EXPECT_TRUE(store_->Collect([&] { return Holders({a}); }).empty());
  EXPECT_EQ(StoredLayers().size(), 1u) << "the top layer went with b";
  EXPECT_TRUE(store_->Collect([] { return std::set<ino_t>{}; }).empty());
  EXPECT_EQ(StoredLayers(), std::set<std::string>{});
  EXPECT_EQ(ReadAt(a + "/bin/tool"), "the tool") << "a tree keeps its files";
}

TEST_F(LayerStoreTest, AFailedLayerIsNotStored) {
  TarBuilder bad;
  bad.File("ok", "x").Symlink("a", "/etc").File("a/evil", "x");
  const std::string dir = work_ + "/a";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto result = ImportTo(BuildPodmanArchive({MakeLayer(BaseLayer()), MakeLayer(bad)}),
                         dir + "/spool", dir + "/rootfs", {}, store_.get());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(StoredLayers().size(), 1u) << "the base is kept, the bad layer is not";
  for (const std::string& name : ListDir(work_ + "/layers")) {
    EXPECT_EQ(name.rfind(".new-", 0), std::string::npos) << name;
  }
}

TEST_F(LayerStoreTest, UserNamespaceOwnersAreMappedAsLayersAreWritten) {
  TarBuilder layer;
  layer.File("usr/bin/tool", "x", 04755);
  layer.last().uid = 1000;
  layer.last().gid = 50;
  layer.Symlink("link", "/nonexistent-target");
  ImportLimits limits;
  limits.ids = {100000, 65536};
  std::string a = Deploy("a", {MakeLayer(layer)}, limits);
  struct stat st = Lstat(a + "/usr/bin/tool");
  EXPECT_EQ(st.st_uid, 101000u);
  EXPECT_EQ(st.st_gid, 100050u);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "no setuid file owned by a host uid";
  EXPECT_EQ(Lstat(a + "/link").st_uid, 100000u) << "the link itself";
  EXPECT_EQ(Lstat(a + "/usr").st_uid, 100000u) << "a directory the tar did not list";
  std::string b = Deploy("b", {MakeLayer(layer)});
  EXPECT_EQ(Lstat(b + "/usr/bin/tool").st_uid, 1000u) << "stored apart from the mapped layer";
  EXPECT_EQ(StoredLayers().size(), 2u);
}

TEST_F(LayerStoreTest, OwnersOutsideTheUserNamespaceAreRefused) {
  TarBuilder layer;
  layer.File("etc/big", "x");
  layer.last().uid = 70000;
  ImportLimits limits;
  limits.ids = {100000, 65536};
  const std::string dir = work_ + "/a";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto result = ImportTo(BuildPodmanArchive({MakeLayer(layer)}), dir + "/spool", dir + "/rootfs",
                         limits, store_.get());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, Errc::kBadImage);
  EXPECT_NE(result.error().message.find("outside the user namespace's 65536 ids"),
            std::string::npos)
      << result.error().message;
}

TEST_F(LayerStoreTest, AnUnlistedDirectoryIsReachedThroughASymlinkBelow) {
  // A merged-/usr base: /lib is a symlink; a later layer adds lib/x/foo without listing lib.
  TarBuilder lower, upper;
  lower.Dir("usr").Dir("usr/lib").Symlink("lib", "usr/lib");
  upper.File("lib/x/foo", "foo");
  std::string a = Deploy("a", {MakeLayer(lower), MakeLayer(upper)});
  EXPECT_EQ(ReadAt(a + "/usr/lib/x/foo"), "foo");
  EXPECT_TRUE(S_ISLNK(Lstat(a + "/lib").st_mode));
  TarBuilder escaping;
  escaping.Symlink("up", "../../../..");
  TarBuilder through;
  through.File("up/evil", "x");
  const std::string dir = work_ + "/b";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto result = ImportTo(BuildPodmanArchive({MakeLayer(escaping), MakeLayer(through)}),
                         dir + "/spool", dir + "/rootfs", {}, store_.get());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("path escapes the root"), std::string::npos)
      << result.error().message;
}

class UserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/faas-user-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    std::filesystem::create_directories(root_ + "/etc");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Write(const std::string& path, const std::string& text) {
    std::ofstream(root_ + "/" + path) << text;
  }
  std::string root_;
};

TEST_F(UserTest, EmptyIsRoot) {
  auto ids = ResolveUser(root_, "");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->uid, 0u);
  EXPECT_EQ(ids->gid, 0u);
}

TEST_F(UserTest, NamesResolveThroughTheImagesFiles) {
  Write("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n");
  Write("etc/group", "root:x:0:\nstaff:x:50:\n");
  auto app = ResolveUser(root_, "app");
  ASSERT_TRUE(app.ok()) << app.error().message;
  EXPECT_EQ(app->uid, 1000u);
  EXPECT_EQ(app->gid, 1001u);
  auto with_group = ResolveUser(root_, "app:staff");
  ASSERT_TRUE(with_group.ok());
  EXPECT_EQ(with_group->gid, 50u);
  auto numeric = ResolveUser(root_, "1000:7");
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(numeric->uid, 1000u);
  EXPECT_EQ(numeric->gid, 7u);
  EXPECT_EQ(ResolveUser(root_, "4242")->gid, 0u) << "unknown numeric uid gets gid 0";
}

TEST_F(UserTest, UnknownNamesAreBadImages) {
  Write("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
  auto r = ResolveUser(root_, "nobody");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kBadImage);
  EXPECT_FALSE(ResolveUser(root_, "root:wheel").ok());
}

TEST_F(UserTest, AnOversizedPasswdIsABadImageNotATooLargeUpload) {
  Write("etc/passwd", std::string(5 << 20, '#'));
  auto r = ResolveUser(root_, "app");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kBadImage);
  EXPECT_NE(r.error().message.find("/etc/passwd: larger than"), std::string::npos)
      << r.error().message;
}

TEST_F(UserTest, CommandMustExistAsRuncWouldFindIt) {
  std::filesystem::create_directories(root_ + "/usr/bin");
  Write("usr/bin/python3.11", "#!");
  std::filesystem::permissions(root_ + "/usr/bin/python3.11", std::filesystem::perms::owner_all);
  std::filesystem::create_symlink("python3.11", root_ + "/usr/bin/python3");
  std::filesystem::create_directory_symlink("usr/bin", root_ + "/bin");
  Write("usr/bin/data", "not executable");
  EXPECT_TRUE(CheckCommand(root_, {"/usr/bin/python3", "-c", "1"}, {}).ok());
  EXPECT_TRUE(CheckCommand(root_, {"/bin/python3"}, {}).ok()) << "through the usrmerge link";
  EXPECT_TRUE(CheckCommand(root_, {"python3"}, {}).ok()) << "default PATH";
  EXPECT_FALSE(CheckCommand(root_, {"python3"}, {"PATH=/opt/bin"}).ok());
  EXPECT_FALSE(CheckCommand(root_, {"/usr/bin/data"}, {}).ok());
  EXPECT_FALSE(CheckCommand(root_, {"/nope"}, {}).ok());
  EXPECT_FALSE(CheckCommand(root_, {"./relative"}, {}).ok());
  EXPECT_FALSE(CheckCommand(root_, {}, {}).ok());
  std::filesystem::create_symlink("/usr/bin/env", root_ + "/usr/bin/hostenv");
  EXPECT_FALSE(CheckCommand(root_, {"/usr/bin/hostenv"}, {}).ok())
      << "an absolute link resolves inside the rootfs, where it does not exist";
}

TEST_F(UserTest, MissingWorkingDirIsCreatedRootOwned0755) {
  const mode_t old_umask = ::umask(077);
  Status made = PrepareWorkingDir(root_, "/srv/./app//data/");
  ::umask(old_umask);
  ASSERT_TRUE(made.ok()) << made.error().message;
  for (const char* dir : {"srv", "srv/app", "srv/app/data"}) {
    struct stat st;
    ASSERT_EQ(::lstat((root_ + "/" + dir).c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    EXPECT_EQ(st.st_mode & 07777, 0755u) << dir << ": the umask does not apply";
    EXPECT_EQ(st.st_uid, ::geteuid()) << dir;
  }
  EXPECT_TRUE(PrepareWorkingDir(root_, "/srv/app/data").ok()) << "existing: nothing to do";
  EXPECT_TRUE(PrepareWorkingDir(root_, "").ok());
  EXPECT_TRUE(PrepareWorkingDir(root_, "/").ok());
}

TEST_F(UserTest, WorkingDirThroughALinkInsideTheImage) {
  std::filesystem::create_directories(root_ + "/usr/lib");
  std::filesystem::create_directory_symlink("usr/lib", root_ + "/lib");
  ASSERT_TRUE(PrepareWorkingDir(root_, "/lib/app").ok());
  EXPECT_TRUE(std::filesystem::is_directory(root_ + "/usr/lib/app"));
}

TEST_F(UserTest, RegressionBadWorkingDirIsRefusedAndNothingEscapes) {
  char outside_tmpl[] = "/tmp/faas-outside-XXXXXX";
  const std::string outside = ::mkdtemp(outside_tmpl);
  Write("etc/file", "x");
  std::filesystem::create_directory_symlink(outside, root_ + "/abs");
  std::filesystem::create_directory_symlink("../../../../../.." + outside, root_ + "/rel");
  std::filesystem::create_symlink("nowhere", root_ + "/dangling");
  const std::pair<std::string, std::string> bad[] = {
      {"app", "the image's WorkingDir 'app' is not an absolute path"},
      {"/app/../..", "the image's WorkingDir '/app/../..' has a '..' component"},
      {"/etc/file",
       "the image's WorkingDir '/etc/file' is not a directory in the image (at "
       "/etc/file)"},
      {"/etc/file/sub",
       "the image's WorkingDir '/etc/file/sub' is not a directory in the image "
       "(at /etc/file)"},
      {"/dangling",
       "the image's WorkingDir '/dangling' is not a directory in the image (at "
       "/dangling)"},
      {"/abs/made", "the image's WorkingDir '/abs/made' leads out of the image (at /abs)"},
      {"/rel/made", "the image's WorkingDir '/rel/made' leads out of the image (at /rel)"},
      {"x\x1b[2J", "the image's WorkingDir 'x\\x1b[2J' is not an absolute path"},
  };
  for (const auto& [dir, message] : bad) {
    Status status = PrepareWorkingDir(root_, dir);
    ASSERT_FALSE(status.ok()) << dir;
    EXPECT_EQ(status.error().code, Errc::kBadImage) << dir;
    EXPECT_EQ(status.error().message, message);
  }
  EXPECT_TRUE(std::filesystem::is_empty(outside)) << "nothing was created outside the rootfs";
  std::filesystem::remove_all(outside);
}

TEST_F(UserTest, PasswdSymlinkCannotLeaveTheRootfs) {
  // /etc/passwd -> /etc/passwd of the host would name root; inside the rootfs it is missing.
  std::filesystem::create_symlink("/etc/passwd", root_ + "/etc/passwd");
  auto r = ResolveUser(root_, "root");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kBadImage);
}

}  // namespace
}  // namespace faas::image
