#include "image/layer_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/file.h"
#include "image/archive_util.h"
#include "image/importer.h"

namespace faas::image {
namespace {

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Sha256Hex(const std::string& data) {
  Sha256 hash;
  hash.Update(data.data(), data.size());
  return hash.FinalHex();
}

struct Entry {
  std::string path;
  mode_t mode;
  int64_t uid;
  int64_t gid;
  int64_t mtime;
  std::string link;  // symlink target or hard link source
  std::string data;
  bool operator==(const Entry&) const = default;
};

// The entries of a gzip tar, and the tar's own bytes (for the diff_id).
std::vector<Entry> ReadLayer(const std::string& path, std::string* tar) {
  std::vector<Entry> entries;
  // The tar itself, decompressed with the raw format.
  archive* raw = archive_read_new();
  archive_read_support_filter_gzip(raw);
  archive_read_support_format_raw(raw);
  EXPECT_EQ(archive_read_open_filename(raw, path.c_str(), 65536), ARCHIVE_OK);
  archive_entry* e = nullptr;
  EXPECT_EQ(archive_read_next_header(raw, &e), ARCHIVE_OK);
  char buf[65536];
  for (la_ssize_t n; (n = archive_read_data(raw, buf, sizeof buf)) > 0;) tar->append(buf, n);
  archive_read_free(raw);

  archive* a = archive_read_new();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, path.c_str(), 65536), ARCHIVE_OK);
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    Entry entry{archive_entry_pathname(e),
                archive_entry_mode(e),
                archive_entry_uid(e),
                archive_entry_gid(e),
                archive_entry_mtime(e),
                "",
                ""};
    if (const char* s = archive_entry_symlink(e)) entry.link = s;
    if (const char* h = archive_entry_hardlink(e)) entry.link = h;
    const char* uname = archive_entry_uname(e);
    EXPECT_STREQ(uname != nullptr ? uname : "", "") << entry.path;
    EXPECT_FALSE(archive_entry_atime_is_set(e));
    for (la_ssize_t n; (n = archive_read_data(a, buf, sizeof buf)) > 0;) entry.data.append(buf, n);
    entries.push_back(std::move(entry));
  }
  archive_read_free(a);
  return entries;
}

class LayerWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/layer-writer-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/root";
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  // A tree with each kind of entry, owned by base+id.
  void MakeTree(uint32_t base) {
    ASSERT_EQ(::mkdir((root_ + "/etc").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((root_ + "/b-dir").c_str(), 0700), 0);
    WriteFile(root_ + "/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    WriteFile(root_ + "/b-dir/data", std::string(200000, 'x'));
    ASSERT_EQ(::chmod((root_ + "/etc/passwd").c_str(), 0640), 0);
    ASSERT_EQ(::link((root_ + "/etc/passwd").c_str(), (root_ + "/etc/passwd-").c_str()), 0);
    ASSERT_EQ(::symlink("../etc/passwd", (root_ + "/b-dir/link").c_str()), 0);
    ASSERT_EQ(::mkfifo((root_ + "/fifo").c_str(), 0600), 0);
    ASSERT_EQ(::mknod((root_ + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    for (const char* p : {"/etc", "/b-dir", "/etc/passwd", "/b-dir/data", "/fifo"})
      ASSERT_EQ(::lchown((root_ + p).c_str(), base + 7, base + 8), 0) << p;
    ASSERT_EQ(::lchown((root_ + "/b-dir/link").c_str(), base + 0, base + 0), 0);
    const timespec times[2] = {{1000, 0}, {1700000000, 123456789}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (root_ + "/etc/passwd").c_str(), times, 0), 0);
  }

  Result<WrittenLayer> Write(const std::string& name, uint32_t base) {
    UniqueFd fd(::open((dir_ + "/" + name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd);
    return WriteLayer(root_, base, fd.get());
  }

  // The importer's layer code applies dir_/layer.tar.gz into `back` (made here).
  void ApplyBack(const WrittenLayer& layer, const std::string& back) {
    ASSERT_EQ(::mkdir(back.c_str(), 0755), 0);
    ImportStats stats;
    Status applied =
        ApplyLayerBlobs({{dir_ + "/layer.tar.gz", layer.digest.substr(7)}}, {layer.diff_id}, back,
                        ImportLimits{}, &stats, nullptr, back + ".work");
    ASSERT_TRUE(applied.ok()) << applied.error().message;
  }

  std::string dir_;
  std::string root_;
};

TEST_F(LayerWriterTest, WritesEachKindOfEntryInOrderWithOwnersAndTimes) {
  MakeTree(0);
  auto layer = Write("layer.tar.gz", 0);
  ASSERT_TRUE(layer.ok()) << layer.error().message;
  std::string tar;
  std::vector<Entry> entries = ReadLayer(dir_ + "/layer.tar.gz", &tar);
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/b-dir").c_str(), &st), 0);
  const int64_t dir_time = st.st_mtim.tv_sec;
  ASSERT_EQ(::stat((root_ + "/etc").c_str(), &st), 0);
  const int64_t etc_time = st.st_mtim.tv_sec;
  ASSERT_EQ(::lstat((root_ + "/b-dir/link").c_str(), &st), 0);
  const int64_t link_time = st.st_mtim.tv_sec;
  ASSERT_EQ(::stat((root_ + "/b-dir/data").c_str(), &st), 0);
  const int64_t data_time = st.st_mtim.tv_sec;
  ASSERT_EQ(::stat((root_ + "/fifo").c_str(), &st), 0);
  const int64_t fifo_time = st.st_mtim.tv_sec;
  const std::string passwd = "root:x:0:0::/root:/bin/sh\n";
  // Depth first, names in byte order; the device node is not written.
  std::vector<Entry> want = {
      {"b-dir/", S_IFDIR | 0700, 7, 8, dir_time, "", ""},
      {"b-dir/data", S_IFREG | 0644, 7, 8, data_time, "", std::string(200000, 'x')},
      {"b-dir/link", S_IFLNK | 0777, 0, 0, link_time, "../etc/passwd", ""},
      {"etc/", S_IFDIR | 0755, 7, 8, etc_time, "", ""},
      {"etc/passwd", S_IFREG | 0640, 7, 8, 1700000000, "", passwd},
      // A hard link: libarchive reads its type as none, the target's is the file's.
      {"etc/passwd-", 0640, 7, 8, 1700000000, "etc/passwd", ""},
      {"fifo", S_IFIFO | 0600, 7, 8, fifo_time, "", ""},
  };
  ASSERT_EQ(entries.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    Entry got = entries[i];
    // The test's umask may narrow what was made; compare the written mode with the tree's.
    if (want[i].path == "b-dir/data") want[i].mode = got.mode;
    EXPECT_EQ(got, want[i]) << i << " " << got.path;
  }
  EXPECT_EQ(layer->entries, want.size());
  const std::string blob = ReadFile(dir_ + "/layer.tar.gz");
  EXPECT_EQ(layer->size, blob.size());
  EXPECT_EQ(layer->digest, "sha256:" + Sha256Hex(blob));
  EXPECT_EQ(layer->diff_id, "sha256:" + Sha256Hex(tar));
}

TEST_F(LayerWriterTest, SameTreeSameDigestsAndShiftedOwnersAreWrittenAsTheImageHadThem) {
  MakeTree(0);
  auto first = Write("one.tar.gz", 0);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto again = Write("two.tar.gz", 0);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(first->digest, again->digest);
  EXPECT_EQ(ReadFile(dir_ + "/one.tar.gz"), ReadFile(dir_ + "/two.tar.gz"));

  // The same tree shifted by 100000 for a user namespace gives the same layer back.
  (void)RemoveTree(root_);
  ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  MakeTree(100000);
  // mtimes of the remade directories differ; compare owners only.
  auto shifted = Write("shifted.tar.gz", 100000);
  ASSERT_TRUE(shifted.ok()) << shifted.error().message;
  std::string tar;
  for (const Entry& e : ReadLayer(dir_ + "/shifted.tar.gz", &tar)) {
    EXPECT_LT(e.uid, 100) << e.path;
    EXPECT_LT(e.gid, 100) << e.path;
  }
}

TEST_F(LayerWriterTest, TheImporterAppliesTheLayerBackToTheSameTree) {
  MakeTree(0);
  auto layer = Write("layer.tar.gz", 0);
  ASSERT_TRUE(layer.ok()) << layer.error().message;
  const std::string back = dir_ + "/back";
  ASSERT_NO_FATAL_FAILURE(ApplyBack(*layer, back));
  for (const char* p : {"/etc/passwd", "/b-dir/data"})
    EXPECT_EQ(ReadFile(back + p), ReadFile(root_ + p)) << p;
  struct stat one {
  }, two{};
  ASSERT_EQ(::stat((back + "/etc/passwd").c_str(), &one), 0);
  ASSERT_EQ(::stat((back + "/etc/passwd-").c_str(), &two), 0);
  EXPECT_EQ(one.st_ino, two.st_ino);
  EXPECT_EQ(one.st_uid, 7u);
  EXPECT_EQ(one.st_mtim.tv_sec, 1700000000);
  char target[64] = {};
  ASSERT_GT(::readlink((back + "/b-dir/link").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "../etc/passwd");
}

TEST_F(LayerWriterTest, DataThatDoesNotCompressIsStoredAndTheRestCompressed) {
  std::string noise(3 << 20, '\0');
  uint64_t x = 88172645463325252ull;  // xorshift: bytes deflate cannot shrink
  for (char& c : noise) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  WriteFile(root_ + "/a-noise", noise);
  WriteFile(root_ + "/b-zeros", std::string(3 << 20, '\0'));
  WriteFile(root_ + "/c-noise", noise);
  auto layer = Write("layer.tar.gz", 0);
  ASSERT_TRUE(layer.ok()) << layer.error().message;
  // The noise is stored (a little over its size); of the zeros, at most the window
  // where they begin is stored, the rest shrinks to almost nothing.
  EXPECT_GT(layer->size, 2 * noise.size());
  EXPECT_LT(layer->size, 2 * noise.size() + (1 << 20) + (256 << 10));
  auto again = Write("again.tar.gz", 0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->digest, layer->digest);
  const std::string back = dir_ + "/back";
  ASSERT_NO_FATAL_FAILURE(ApplyBack(*layer, back));
  for (const char* p : {"/a-noise", "/b-zeros", "/c-noise"})
    EXPECT_EQ(ReadFile(back + p), ReadFile(root_ + p)) << p;
}

TEST_F(LayerWriterTest, AMissingTreeOrAFullOutputIsAnError) {
  UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  auto missing = WriteLayer(dir_ + "/nowhere", 0, null.get());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("nowhere"), std::string::npos);

  WriteFile(root_ + "/big", std::string(1 << 20, 'x'));
  UniqueFd full(::open("/dev/full", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(full);
  auto failed = WriteLayer(root_, 0, full.get());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, Errc::kIo) << failed.error().message;
}

}  // namespace
}  // namespace faas::image
