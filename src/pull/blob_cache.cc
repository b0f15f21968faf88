#include "pull/blob_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "common/file.h"

namespace faas::pull {
namespace {

bool IsBlobName(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

BlobCache::BlobCache(std::string dir, uint64_t max_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes) {}

Status BlobCache::Open() {
  const std::string blobs = dir_ + "/sha256";
  FAAS_RETURN_IF_ERROR(MakeDirs(blobs, 0700));
  DIR* listing = ::opendir(blobs.c_str());
  if (listing == nullptr) return SysError(errno, "open " + blobs);
  // (mtime, name, size) of each blob: the order of their last use.
  std::vector<std::tuple<struct timespec, std::string, uint64_t>> found;
  for (dirent* entry; (entry = ::readdir(listing)) != nullptr;) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = blobs + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (!IsBlobName(name) || !S_ISREG(st.st_mode)) {
      if (S_ISDIR(st.st_mode) ? !RemoveTree(path).ok() : ::unlink(path.c_str()) != 0)
        spdlog::warn("layer cache: cannot remove {}", path);
      continue;
    }
    found.emplace_back(st.st_mtim, name, static_cast<uint64_t>(st.st_size));
  }
  ::closedir(listing);
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    const struct timespec& x = std::get<0>(a);
    const struct timespec& y = std::get<0>(b);
    return std::tie(x.tv_sec, x.tv_nsec) < std::tie(y.tv_sec, y.tv_nsec);
  });
  std::lock_guard lock(mutex_);
  for (const auto& [mtime, hex, size] : found) {
    entries_[hex] = Entry{.size = size, .last_use = ++clock_, .leases = 0};
    counters_.bytes += size;
  }
  EvictLocked();
  return Ok();
}

BlobCache::Lease::Lease(BlobCache* cache, std::string hex, std::string path)
    : cache_(cache), hex_(std::move(hex)), path_(std::move(path)) {}

BlobCache::Lease::Lease(Lease&& other) noexcept
    : cache_(std::exchange(other.cache_, nullptr)),
      hex_(std::move(other.hex_)),
      path_(std::move(other.path_)) {}

BlobCache::Lease& BlobCache::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    cache_ = std::exchange(other.cache_, nullptr);
    hex_ = std::move(other.hex_);
    path_ = std::move(other.path_);
  }
  return *this;
}

BlobCache::Lease::~Lease() { Release(); }

void BlobCache::Lease::Release() {
  if (cache_ != nullptr) std::exchange(cache_, nullptr)->Unlease(hex_);
}

BlobCache::Lease BlobCache::Take(const std::string& hex, Entry& entry) {
  ++entry.leases;
  entry.last_use = ++clock_;
  return Lease(this, hex, BlobPath(hex));
}

std::optional<BlobCache::Lease> BlobCache::Find(const std::string& hex, uint64_t size) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(hex);
  if (it == entries_.end() || it->second.size != size) {
    ++counters_.misses;
    return std::nullopt;
  }
  if (!OnDisk(hex, size)) {
    // Removed or cut short behind faasd's back: forgotten, and downloaded again.
    spdlog::warn("layer cache: {} is gone or changed on disk: fetching it again", BlobPath(hex));
    if (it->second.leases == 0) {
      (void)::unlink(BlobPath(hex).c_str());
      counters_.bytes -= it->second.size;
      entries_.erase(it);
    }
    ++counters_.misses;
    return std::nullopt;
  }
  ++counters_.hits;
  // Its mtime keeps the order of use across restarts.
  (void)::utimensat(AT_FDCWD, BlobPath(hex).c_str(), nullptr, 0);
  return Take(hex, it->second);
}

bool BlobCache::OnDisk(const std::string& hex, uint64_t size) const {
  struct stat st {};
  return ::stat(BlobPath(hex).c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         static_cast<uint64_t>(st.st_size) == size;
}

std::string BlobCache::PartPath(const std::string& hex) {
  std::lock_guard lock(mutex_);
  return dir_ + "/sha256/.part-" + std::to_string(::getpid()) + "-" +
         std::to_string(++part_serial_) + "-" + hex;
}

Result<BlobCache::Lease> BlobCache::Insert(const std::string& hex, const std::string& part_path,
                                           uint64_t size) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(hex);
      it != entries_.end() && it->second.size == size && OnDisk(hex, size)) {
    (void)::unlink(part_path.c_str());
    return Take(hex, it->second);
  }
  if (::rename(part_path.c_str(), BlobPath(hex).c_str()) != 0) {
    const int err = errno;
    (void)::unlink(part_path.c_str());
    return SysError(err, "layer cache: rename " + part_path);
  }
  Entry& entry = entries_[hex];
  counters_.bytes -= entry.size;  // a blob of another size under its name: replaced
  entry.size = size;
  counters_.bytes += size;
  Lease lease = Take(hex, entry);
  EvictLocked();
  return lease;
}

void BlobCache::Unlease(const std::string& hex) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(hex); it != entries_.end()) --it->second.leases;
  EvictLocked();
}

void BlobCache::EvictLocked() {
  while (counters_.bytes > max_bytes_) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.leases == 0 &&
          (oldest == entries_.end() || it->second.last_use < oldest->second.last_use))
        oldest = it;
    }
    if (oldest == entries_.end()) return;  // the rest is in use
    const std::string path = BlobPath(oldest->first);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      spdlog::warn("layer cache: cannot remove {}: {}", path, std::strerror(errno));
      return;
    }
    counters_.bytes -= oldest->second.size;
    ++counters_.evictions;
    entries_.erase(oldest);
  }
}

BlobCache::Counters BlobCache::counters() const {
  std::lock_guard lock(mutex_);
  Counters counters = counters_;
  counters.blobs = entries_.size();
  return counters;
}

}  // namespace faas::pull
