// Layer blobs pulled from registries, kept by digest as DIR/sha256/HEX (compressed,
// as the registry sent them), so that a layer shared by several images, or by two
// versions of one, is downloaded and verified once.
//
// Bounded by `max_bytes`: after each insert, and whenever a pull lets go of a blob,
// the least recently used blobs that no pull holds are removed until the rest fit.
// A blob larger than the bound is kept only while a pull uses it; max_bytes 0 keeps
// nothing past its pull. The order of use survives a restart (a blob's mtime is its
// last use). Blobs enter only after their size and digest were checked, by rename,
// so a crash leaves at most a partial download (DIR/sha256/.part-*), removed by Open.
//
// Thread-safe: pulls run on workers.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/error.h"

namespace faas::pull {

class BlobCache {
 public:
  BlobCache(std::string dir, uint64_t max_bytes);
  BlobCache(const BlobCache&) = delete;
  BlobCache& operator=(const BlobCache&) = delete;

  // Creates DIR/sha256 if missing, removes partial downloads and files that are not
  // blobs, and indexes the blobs there; then evicts down to the bound.
  Status Open();

  // A blob a pull is using: not removed until the lease is gone. The cache must
  // outlive its leases.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    const std::string& path() const { return path_; }

   private:
    friend class BlobCache;
    Lease(BlobCache* cache, std::string hex, std::string path);
    void Release();
    BlobCache* cache_;
    std::string hex_;
    std::string path_;
  };

  // The cached blob of sha256 `hex` if there is one of `size` bytes on disk; it
  // becomes the most recently used. One removed or changed behind faasd's back is
  // forgotten (a miss).
  std::optional<Lease> Find(const std::string& hex, uint64_t size);

  // A new path inside the cache to download the blob of `hex` to.
  std::string PartPath(const std::string& hex);

  // Takes a downloaded blob whose size and digest were checked (at `part_path`, from
  // PartPath) into the cache. If the cache got the same blob meanwhile (another pull),
  // the download is dropped and the cached one leased.
  Result<Lease> Insert(const std::string& hex, const std::string& part_path, uint64_t size);

  struct Counters {
    uint64_t hits = 0;       // Find found the blob
    uint64_t misses = 0;     // Find did not
    uint64_t evictions = 0;  // blobs removed to stay within the bound
    uint64_t bytes = 0;      // what the cached blobs weigh now
    uint64_t blobs = 0;
  };
  Counters counters() const;
  const std::string& dir() const { return dir_; }
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  struct Entry {
    uint64_t size = 0;
    uint64_t last_use = 0;  // of a clock that only goes up
    int leases = 0;
  };
  std::string BlobPath(const std::string& hex) const { return dir_ + "/sha256/" + hex; }
  bool OnDisk(const std::string& hex, uint64_t size) const;
  Lease Take(const std::string& hex, Entry& entry);  // mutex_ held
  void Unlease(const std::string& hex);
  void EvictLocked();  // mutex_ held

  const std::string dir_;
  const uint64_t max_bytes_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  uint64_t clock_ = 0;
  uint64_t part_serial_ = 0;
  Counters counters_;
};

}  // namespace faas::pull
