#include "pull/blob_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/file.h"

namespace faas::pull {
namespace {

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  return static_cast<bool>(out);
}

class BlobCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blob-cache-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  static std::string Hex(char c) { return std::string(64, c); }
  bool Cached(char c) const { return ::access((dir_ + "/sha256/" + Hex(c)).c_str(), F_OK) == 0; }

  // Downloads (writes) a blob of `size` bytes into the cache and returns its lease.
  BlobCache::Lease Put(BlobCache& cache, char c, size_t size = 10) {
    const std::string part = cache.PartPath(Hex(c));
    EXPECT_TRUE(WriteFile(part, std::string(size, c)));
    auto lease = cache.Insert(Hex(c), part, size);
    EXPECT_TRUE(lease.ok());
    return std::move(lease).value();
  }

  std::string dir_;
};

TEST_F(BlobCacheTest, KeepsBlobsByDigestAndFindsThemBySize) {
  BlobCache cache(dir_, 100);
  ASSERT_TRUE(cache.Open().ok());
  {
    auto lease = Put(cache, 'a');
    EXPECT_EQ(lease.path(), dir_ + "/sha256/" + Hex('a'));
  }
  auto hit = cache.Find(Hex('a'), 10);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(*ReadFile(hit->path(), 100), std::string(10, 'a'));
  EXPECT_FALSE(cache.Find(Hex('a'), 11).has_value()) << "another size is another blob";
  EXPECT_FALSE(cache.Find(Hex('b'), 10).has_value());
  const auto counters = cache.counters();
  EXPECT_EQ(counters.hits, 1u);
  EXPECT_EQ(counters.misses, 2u);
  EXPECT_EQ(counters.bytes, 10u);
  EXPECT_EQ(counters.blobs, 1u);
}

TEST_F(BlobCacheTest, EvictsTheLeastRecentlyUsedBlobsThatNoPullHolds) {
  BlobCache cache(dir_, 25);
  ASSERT_TRUE(cache.Open().ok());
  { auto a = Put(cache, 'a'); }
  { auto b = Put(cache, 'b'); }
  { auto a = cache.Find(Hex('a'), 10); }  // a is now the more recently used
  { auto c = Put(cache, 'c'); }
  EXPECT_TRUE(Cached('a'));
  EXPECT_FALSE(Cached('b'));
  EXPECT_TRUE(Cached('c'));
  EXPECT_EQ(cache.counters().evictions, 1u);
  EXPECT_EQ(cache.counters().bytes, 20u);

  // Held blobs stay, even over the bound, until their pull lets go.
  auto a = cache.Find(Hex('a'), 10);
  auto c = cache.Find(Hex('c'), 10);
  auto d = Put(cache, 'd');
  EXPECT_TRUE(Cached('a') && Cached('c') && Cached('d'));
  EXPECT_EQ(cache.counters().bytes, 30u);
  a.reset();
  EXPECT_FALSE(Cached('a'));
  EXPECT_EQ(cache.counters().bytes, 20u);
}

TEST_F(BlobCacheTest, SizeZeroKeepsNothingPastItsPull) {
  BlobCache cache(dir_, 0);
  ASSERT_TRUE(cache.Open().ok());
  {
    auto lease = Put(cache, 'a');
    EXPECT_TRUE(Cached('a')) << "while the pull applies it";
  }
  EXPECT_FALSE(Cached('a'));
  EXPECT_EQ(cache.counters().bytes, 0u);
}

TEST_F(BlobCacheTest, ASecondDownloadOfACachedBlobIsDropped) {
  BlobCache cache(dir_, 100);
  ASSERT_TRUE(cache.Open().ok());
  auto first = Put(cache, 'a');
  const std::string part = cache.PartPath(Hex('a'));
  ASSERT_TRUE(WriteFile(part, std::string(10, 'a')));
  auto second = cache.Insert(Hex('a'), part, 10);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->path(), first.path());
  EXPECT_NE(::access(part.c_str(), F_OK), 0);
  EXPECT_EQ(cache.counters().bytes, 10u);
}

TEST_F(BlobCacheTest, ABlobRemovedOrChangedOnDiskIsAMissAndIsTakenAgain) {
  BlobCache cache(dir_, 100);
  ASSERT_TRUE(cache.Open().ok());
  { auto lease = Put(cache, 'a'); }
  { auto lease = Put(cache, 'b'); }
  ASSERT_EQ(::unlink((dir_ + "/sha256/" + Hex('a')).c_str()), 0);
  ASSERT_TRUE(WriteFile(dir_ + "/sha256/" + Hex('b'), "short"));
  EXPECT_FALSE(cache.Find(Hex('a'), 10).has_value());
  EXPECT_FALSE(cache.Find(Hex('b'), 10).has_value());
  EXPECT_EQ(cache.counters().misses, 2u);
  EXPECT_EQ(cache.counters().blobs, 0u);
  EXPECT_EQ(cache.counters().bytes, 0u);
  EXPECT_FALSE(Cached('b'));
  // Downloaded again, it is cached again.
  auto again = Put(cache, 'a');
  EXPECT_TRUE(Cached('a'));
  EXPECT_TRUE(cache.Find(Hex('a'), 10).has_value());
}

TEST_F(BlobCacheTest, OpenIndexesBlobsInTheirOrderOfUseAndDropsPartialDownloads) {
  {
    BlobCache cache(dir_, 100);
    ASSERT_TRUE(cache.Open().ok());
    { auto a = Put(cache, 'a'); }
    { auto b = Put(cache, 'b'); }
    // Used last: its mtime says so after a restart.
    struct timespec old_times[2] = {{.tv_sec = 1000, .tv_nsec = 0}, {.tv_sec = 1000, .tv_nsec = 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/sha256/" + Hex('b')).c_str(), old_times, 0), 0);
    { auto a = cache.Find(Hex('a'), 10); }
    ASSERT_TRUE(WriteFile(cache.PartPath(Hex('c')), "half"));
  }
  BlobCache reopened(dir_, 15);
  ASSERT_TRUE(reopened.Open().ok());
  EXPECT_TRUE(Cached('a'));
  EXPECT_FALSE(Cached('b')) << "the least recently used goes first";
  EXPECT_EQ(reopened.counters().blobs, 1u);
  EXPECT_EQ(reopened.counters().bytes, 10u);
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/sha256")) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u) << "the partial download is gone";
}

}  // namespace
}  // namespace faas::pull
