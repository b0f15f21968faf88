#include "image/layer_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/io.h"
#include "image/archive_util.h"

namespace faas::image {
namespace {

constexpr size_t kChunk = 64 * 1024;

// Data that does not compress (already compressed files, random bytes) costs deflate
// the most time for nothing: a window of the tar that level 1 shrinks by less than 3%
// switches the stream to stored blocks (level 0: a copy). While storing, the first
// kProbe bytes of each window are deflated on the side, and the stream goes back to
// level 1 when they shrink. The choice depends on the bytes alone, so the output stays
// reproducible.
constexpr uint64_t kWindow = 1 << 20;
constexpr uint64_t kProbe = 64 << 10;
constexpr double kWorthIt = 0.97;

// The tar stream's consumer: hashes it (the diff_id), compresses it with gzip, hashes
// the compressed bytes (the digest) and writes them out.
class GzipSink {
 public:
  explicit GzipSink(int fd) : fd_(fd) {}
  ~GzipSink() {
    if (started_) deflateEnd(&z_);
    if (probing_) deflateEnd(&probe_);
  }
  GzipSink(const GzipSink&) = delete;
  GzipSink& operator=(const GzipSink&) = delete;

  Status Start() {
    // 15 + 16: a gzip wrapper, whose header zlib writes without a time or a name. Level
    // 1: about three times as fast as the default on binaries, for a tenth more bytes.
    if (deflateInit2(&z_, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return MakeError(Errc::kInternal, "zlib: cannot start gzip");
    started_ = true;
    if (deflateInit2(&probe_, Z_BEST_SPEED, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return MakeError(Errc::kInternal, "zlib: cannot start gzip");
    probing_ = true;
    return Ok();
  }

  Status Write(const void* data, size_t size) {
    tar_hash_.Update(data, size);
    if (level_ == Z_NO_COMPRESSION && probe_.total_in < kProbe)
      Probe(data, std::min<uint64_t>(size, kProbe - probe_.total_in), Z_NO_FLUSH);
    FAAS_RETURN_IF_ERROR(Deflate(data, size, Z_NO_FLUSH));
    if (z_.total_in - window_in_ < kWindow) return Ok();
    // A window ends: keep the level, or change it (deflateParams flushes a block).
    int level = level_;
    if (level_ == Z_BEST_SPEED) {
      if (Ratio(z_.total_out - window_out_, z_.total_in - window_in_) > kWorthIt)
        level = Z_NO_COMPRESSION;
    } else {
      Probe(nullptr, 0, Z_FINISH);
      if (Ratio(probe_.total_out, probe_.total_in) <= kWorthIt) level = Z_BEST_SPEED;
    }
    deflateReset(&probe_);
    if (level != level_) FAAS_RETURN_IF_ERROR(SetLevel(level));
    window_in_ = z_.total_in;
    window_out_ = z_.total_out;
    return Ok();
  }

  Status Finish() { return Deflate(nullptr, 0, Z_FINISH); }

  WrittenLayer Done() {
    return {.digest = "sha256:" + blob_hash_.FinalHex(),
            .diff_id = "sha256:" + tar_hash_.FinalHex(),
            .size = size_,
            .entries = 0};
  }

 private:
  static double Ratio(uint64_t out, uint64_t in) {
    return in == 0 ? 0 : static_cast<double>(out) / static_cast<double>(in);
  }

  // Deflates into a scratch buffer only to count the bytes it would make.
  void Probe(const void* data, size_t size, int flush) {
    probe_.next_in = static_cast<Bytef*>(const_cast<void*>(data));
    probe_.avail_in = static_cast<uInt>(size);
    int rc;
    do {
      probe_.next_out = scratch_.data();
      probe_.avail_out = static_cast<uInt>(scratch_.size());
      rc = deflate(&probe_, flush);
    } while (rc == Z_OK && (probe_.avail_in > 0 || (flush == Z_FINISH && probe_.avail_out == 0)));
  }

  Status SetLevel(int level) {
    for (;;) {
      z_.next_out = out_.data();
      z_.avail_out = static_cast<uInt>(out_.size());
      const int rc = deflateParams(&z_, level, Z_DEFAULT_STRATEGY);
      FAAS_RETURN_IF_ERROR(Emit(out_.size() - z_.avail_out));
      if (rc == Z_OK) break;
      if (rc != Z_BUF_ERROR) return MakeError(Errc::kInternal, "zlib: cannot change the level");
    }
    level_ = level;
    return Ok();
  }

  Status Emit(size_t produced) {
    if (produced == 0) return Ok();
    blob_hash_.Update(out_.data(), produced);
    size_ += produced;
    return WriteAll(fd_, std::string_view(reinterpret_cast<char*>(out_.data()), produced));
  }

  Status Deflate(const void* data, size_t size, int flush) {
    z_.next_in = static_cast<Bytef*>(const_cast<void*>(data));
    z_.avail_in = static_cast<uInt>(size);
    for (;;) {
      z_.next_out = out_.data();
      z_.avail_out = static_cast<uInt>(out_.size());
      int rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR) return MakeError(Errc::kInternal, "zlib: deflate failed");
      FAAS_RETURN_IF_ERROR(Emit(out_.size() - z_.avail_out));
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0))
        return Ok();
    }
  }

  int fd_;
  z_stream z_{};
  bool started_ = false;
  Sha256 tar_hash_;
  Sha256 blob_hash_;
  uint64_t size_ = 0;
  int level_ = Z_BEST_SPEED;
  z_stream probe_{};
  bool probing_ = false;
  uint64_t window_in_ = 0;  // total_in and total_out when the window began
  uint64_t window_out_ = 0;
  std::array<Bytef, kChunk> out_{};
  std::array<Bytef, kChunk> scratch_{};
};

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

class Writer {
 public:
  Writer(uint32_t id_base, int out_fd) : id_base_(id_base), sink_(out_fd) {}

  Result<WrittenLayer> Run(const std::string& root_dir) {
    UniqueFd root(::open(root_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) return SysError(errno, "open " + root_dir);
    FAAS_RETURN_IF_ERROR(sink_.Start());
    archive_.reset(archive_write_new());
    entry_.reset(archive_entry_new());
    if (!archive_ || !entry_) return MakeError(Errc::kInternal, "libarchive: out of memory");
    archive* a = archive_.get();
    // Paths are written as the tree has them, bytes and all, not converted.
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY") < ARCHIVE_WARN ||
        archive_write_open2(a, this, nullptr, &Writer::OnWrite, nullptr, nullptr) != ARCHIVE_OK)
      return ArchiveError("start the layer");
    FAAS_RETURN_IF_ERROR(Directory(root.get(), "", root_dir));
    if (archive_write_close(a) != ARCHIVE_OK) return ArchiveError("end the layer");
    FAAS_RETURN_IF_ERROR(sink_.Finish());
    WrittenLayer layer = sink_.Done();
    layer.entries = entries_;
    return layer;
  }

 private:
  static la_ssize_t OnWrite(archive*, void* opaque, const void* data, size_t size) {
    auto* self = static_cast<Writer*>(opaque);
    Status st = self->sink_.Write(data, size);
    if (st.ok()) return static_cast<la_ssize_t>(size);
    self->sink_error_ = std::move(st).error();
    return -1;
  }

  Error ArchiveError(const std::string& what) {
    if (sink_error_) return std::move(*sink_error_);
    const char* text = archive_error_string(archive_.get());
    return MakeError(Errc::kInternal, what + ": " + (text != nullptr ? text : "libarchive error"));
  }

  // The names of a directory, in byte order.
  static Result<std::vector<std::string>> Names(int dir_fd, const std::string& where) {
    int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return SysError(errno, "open " + where);
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), ::closedir);
    if (!dir) {
      int err = errno;
      ::close(fd);
      return SysError(err, "read " + where);
    }
    std::vector<std::string> names;
    errno = 0;
    while (dirent* d = ::readdir(dir.get())) {
      std::string name = d->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
      errno = 0;
    }
    if (errno != 0) return SysError(errno, "read " + where);
    std::sort(names.begin(), names.end());
    return names;
  }

  Status Directory(int dir_fd, const std::string& prefix, const std::string& where) {
    FAAS_ASSIGN_OR_RETURN(std::vector<std::string> names, Names(dir_fd, where));
    for (const std::string& name : names) {
      const std::string path = prefix + name;
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return SysError(errno, "stat " + where + "/" + name);
      if (S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) continue;
      FAAS_RETURN_IF_ERROR(Entry(dir_fd, name, path, st, where));
      if (S_ISDIR(st.st_mode)) {
        UniqueFd sub(
            ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) return SysError(errno, "open " + where + "/" + name);
        FAAS_RETURN_IF_ERROR(Directory(sub.get(), path + "/", where + "/" + name));
      }
    }
    return Ok();
  }

  uint32_t Unshift(uint32_t id) const { return id >= id_base_ ? id - id_base_ : 0; }

  Status Entry(int dir_fd, const std::string& name, const std::string& path, const struct stat& st,
               const std::string& where) {
    archive_entry* e = entry_.get();
    archive_entry_clear(e);
    archive_entry_copy_pathname(e, path.c_str());
    archive_entry_set_mode(e, st.st_mode);
    archive_entry_set_uid(e, Unshift(st.st_uid));
    archive_entry_set_gid(e, Unshift(st.st_gid));
    archive_entry_set_mtime(e, st.st_mtim.tv_sec, 0);
    UniqueFd file;
    if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1) {
        auto [it, first] = links_.try_emplace({st.st_dev, st.st_ino}, path);
        if (!first) {
          archive_entry_copy_hardlink(e, it->second.c_str());
          archive_entry_set_size(e, 0);
          return WriteHeader(path);
        }
      }
      file.Reset(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!file) return SysError(errno, "open " + where + "/" + name);
      archive_entry_set_size(e, st.st_size);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
      if (n < 0) return SysError(errno, "read the link " + where + "/" + name);
      target.resize(static_cast<size_t>(n));
      archive_entry_copy_symlink(e, target.c_str());
    }
    FAAS_RETURN_IF_ERROR(WriteHeader(path));
    if (file) FAAS_RETURN_IF_ERROR(Data(file.get(), static_cast<uint64_t>(st.st_size), path));
    return Ok();
  }

  Status WriteHeader(const std::string& path) {
    ++entries_;
    if (archive_write_header(archive_.get(), entry_.get()) < ARCHIVE_WARN)
      return ArchiveError("entry '" + path + "'");
    return Ok();
  }

  // Copies `size` bytes of the file; one that shrank meanwhile is padded with zeros
  // (by libarchive), one that grew is cut at the size its header gave.
  Status Data(int fd, uint64_t size, const std::string& path) {
    std::array<char, kChunk> buffer;
    while (size > 0) {
      ssize_t n = ::read(fd, buffer.data(), std::min<uint64_t>(size, buffer.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SysError(errno, "read '" + path + "'");
      if (n == 0) break;
      if (archive_write_data(archive_.get(), buffer.data(), static_cast<size_t>(n)) < 0)
        return ArchiveError("entry '" + path + "'");
      size -= static_cast<uint64_t>(n);
    }
    return Ok();
  }

  uint32_t id_base_;
  GzipSink sink_;
  std::optional<Error> sink_error_;
  std::unique_ptr<archive, ArchiveDeleter> archive_;
  std::unique_ptr<archive_entry, EntryDeleter> entry_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first path of each linked file
  uint64_t entries_ = 0;
};

}  // namespace

Result<WrittenLayer> WriteLayer(const std::string& root_dir, uint32_t id_base, int out_fd) {
  Writer writer(id_base, out_fd);
  return writer.Run(root_dir);
}

}  // namespace faas::image
