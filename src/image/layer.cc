#include "image/layer.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
#include "image/archive_util.h"

namespace faas::image {
namespace {

constexpr size_t kBufferSize = 64 * 1024;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr int kOpenRetries = 16;
constexpr int64_t kMaxId = 0xfffffffe;  // (uid_t)-1 means "leave unchanged" to chown

Error Bad(const std::string& what) { return MakeError(Errc::kBadImage, what); }

// Failures the input can provoke are its fault; anything else is our I/O failing.
Error FsError(int err, const std::string& what) {
  bool input_fault = err == ENAMETOOLONG || err == EMLINK || err == ELOOP || err == EXDEV;
  return SysError(err, what, input_fault ? Errc::kBadImage : Errc::kIo);
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// ---------------------------------------------------------------------------
// Reading: a decompressing reader over the blob feeds the tar reader through
// ReadTarStream, which is where the diff_id hash and the size budget live.

struct TarStream {
  archive* decompressor = nullptr;
  Sha256* hash = nullptr;  // only in the checking pass
  uint64_t bytes = 0;
  uint64_t max_bytes = 0;
  bool empty = false;
  bool too_large = false;
  std::string error;  // what went wrong below the tar reader
  std::unique_ptr<char[]> buffer = std::make_unique<char[]>(kBufferSize);  // off the stack
};

la_ssize_t ReadTarStream(archive* tar, void* opaque, const void** out) {
  auto* stream = static_cast<TarStream*>(opaque);
  if (stream->empty) return 0;
  la_ssize_t n = archive_read_data(stream->decompressor, stream->buffer.get(), kBufferSize);
  if (n < 0) {
    stream->error = ArchiveErrorText(stream->decompressor);
    archive_set_error(tar, EIO, "%s", stream->error.c_str());
    return ARCHIVE_FATAL;
  }
  stream->bytes += static_cast<uint64_t>(n);
  if (stream->bytes > stream->max_bytes) {
    stream->too_large = true;
    archive_set_error(tar, EFBIG, "layer data over the size limit");
    return ARCHIVE_FATAL;
  }
  if (stream->hash != nullptr) stream->hash->Update(stream->buffer.get(), static_cast<size_t>(n));
  *out = stream->buffer.get();
  return n;
}

// One pass over a layer blob. Not movable: libarchive holds a pointer to stream_.
class LayerReader {
 public:
  LayerReader() = default;
  LayerReader(const LayerReader&) = delete;
  LayerReader& operator=(const LayerReader&) = delete;

  Status Open(int blob_fd, Sha256* hash, uint64_t max_bytes);
  // Reads the blob from `read` instead. The decompressed stream is hashed into `hash`
  // only when the blob is compressed (see compressed()).
  Status OpenStream(const LayerStreamReader* read, Sha256* hash, uint64_t max_bytes);
  // The blob is a verified uncompressed tar: read it directly (seeking over data
  // nobody reads), its size counted against `max_bytes` at once.
  Status OpenPlainTar(int blob_fd, uint64_t max_bytes);
  // The next entry, or null after the last one.
  Result<archive_entry*> Next();
  // Reads what follows the tar's end marker, so that the hash covers the whole stream.
  Status Drain();
  // The error behind a failed read from tar().
  Error ReadError() const;
  archive* tar() const { return tar_.get(); }
  uint64_t bytes() const { return stream_.bytes; }
  // The blob's fd when it is read as a plain tar (OpenPlainTar), else -1.
  int plain_fd() const { return plain_fd_; }
  // Whether the blob is compressed (after Open or OpenStream).
  bool compressed() const { return compressed_; }

 private:
  ArchiveReader decompressor_;
  ArchiveReader tar_;
  Status OpenDecompressed(Sha256* hash, uint64_t max_bytes);

  TarStream stream_;
  int plain_fd_ = -1;
  bool compressed_ = false;
};

la_ssize_t ReadBlob(archive*, void* opaque, const void** out) {
  return (*static_cast<const LayerStreamReader*>(opaque))(out);
}

Status LayerReader::Open(int blob_fd, Sha256* hash, uint64_t max_bytes) {
  if (::lseek(blob_fd, 0, SEEK_SET) < 0) return SysError(errno, "seek layer blob");
  decompressor_ = NewDecompressReader();
  if (!decompressor_) return MakeError(Errc::kInternal, "libarchive: out of memory");
  if (archive_read_open_fd(decompressor_.get(), blob_fd, kBufferSize) != ARCHIVE_OK) {
    return Bad("unreadable layer blob: " + Quote(ArchiveErrorText(decompressor_.get())));
  }
  return OpenDecompressed(hash, max_bytes);
}

Status LayerReader::OpenStream(const LayerStreamReader* read, Sha256* hash, uint64_t max_bytes) {
  decompressor_ = NewDecompressReader();
  if (!decompressor_) return MakeError(Errc::kInternal, "libarchive: out of memory");
  if (archive_read_open(decompressor_.get(), const_cast<LayerStreamReader*>(read), nullptr,
                        ReadBlob, nullptr) != ARCHIVE_OK) {
    return Bad("unreadable layer blob: " + Quote(ArchiveErrorText(decompressor_.get())));
  }
  FAAS_RETURN_IF_ERROR(OpenDecompressed(hash, max_bytes));
  // An uncompressed blob is its own diff_id, which the caller hashes already.
  if (!compressed_) stream_.hash = nullptr;
  return Ok();
}

// The decompressor is open on the blob: the tar reader is set up on top of it.
Status LayerReader::OpenDecompressed(Sha256* hash, uint64_t max_bytes) {
  tar_ = NewTarReader(/*allow_empty=*/true);
  if (!tar_) return MakeError(Errc::kInternal, "libarchive: out of memory");
  stream_.decompressor = decompressor_.get();
  stream_.hash = hash;
  stream_.max_bytes = max_bytes;
  archive_entry* raw = nullptr;
  int r = archive_read_next_header(decompressor_.get(), &raw);
  compressed_ = archive_filter_count(decompressor_.get()) > 1;
  if (r < ARCHIVE_WARN) {
    return Bad("unreadable layer blob: " + Quote(ArchiveErrorText(decompressor_.get())));
  }
  stream_.empty = r == ARCHIVE_EOF;  // the blob decompressed to nothing at all
  if (archive_read_open(tar_.get(), &stream_, nullptr, ReadTarStream, nullptr) != ARCHIVE_OK) {
    return ReadError();
  }
  return Ok();
}

Status LayerReader::OpenPlainTar(int blob_fd, uint64_t max_bytes) {
  struct stat st;
  if (::fstat(blob_fd, &st) != 0) return SysError(errno, "stat layer blob");
  if (::lseek(blob_fd, 0, SEEK_SET) < 0) return SysError(errno, "seek layer blob");
  stream_.bytes = static_cast<uint64_t>(st.st_size);
  if (stream_.bytes > max_bytes) {
    stream_.too_large = true;
    return ReadError();
  }
  stream_.empty = true;  // nothing to drain: the tar reader reads the fd itself
  tar_ = NewTarReader(/*allow_empty=*/true, /*decompress=*/false);
  if (!tar_) return MakeError(Errc::kInternal, "libarchive: out of memory");
  if (archive_read_open_fd(tar_.get(), blob_fd, kBufferSize) != ARCHIVE_OK) return ReadError();
  plain_fd_ = blob_fd;
  return Ok();
}

Result<archive_entry*> LayerReader::Next() {
  archive_entry* entry = nullptr;
  int r = archive_read_next_header(tar_.get(), &entry);
  if (r == ARCHIVE_EOF) return static_cast<archive_entry*>(nullptr);
  if (r == ARCHIVE_OK || r == ARCHIVE_WARN) return entry;
  return ReadError();
}

Status LayerReader::Drain() {
  const void* data = nullptr;
  for (;;) {
    la_ssize_t n = ReadTarStream(tar_.get(), &stream_, &data);
    if (n == 0) return Ok();
    if (n < 0) return ReadError();
  }
}

Error LayerReader::ReadError() const {
  if (stream_.too_large) {
    return MakeError(Errc::kTooLarge, "decompressed layers exceed the size limit");
  }
  if (!stream_.error.empty()) return Bad("corrupt layer data: " + Quote(stream_.error));
  return Bad("invalid tar: " + Quote(ArchiveErrorText(tar_.get())));
}

// ---------------------------------------------------------------------------
// What an entry means, decided from the header alone (both passes use this).

enum class Kind {
  kSkip,
  kWhiteout,
  kOpaque,
  kDirectory,
  kFile,
  kSymlink,
  kHardlink,
  kFifo,
  kDevice,  // never created: only what was at its path is removed
};

struct Entry {
  Kind kind = Kind::kSkip;
  std::vector<std::string> path;  // whiteout: what it removes; opaque: the directory
  std::vector<std::string> link_path;
  std::string symlink_target;
};

const char* EntryName(archive_entry* e) {
  const char* name = archive_entry_pathname(e);
  return name != nullptr ? name : archive_entry_pathname_utf8(e);
}

Status ClassifyWhiteout(Entry* entry) {
  const std::string base = entry->path.back();
  if (base == kOpaqueMarker) {
    entry->path.pop_back();
    entry->kind = Kind::kOpaque;
    return Ok();
  }
  if (StartsWith(base, kWhiteoutMetaPrefix)) return Ok();  // aufs bookkeeping: ignored
  std::string hidden = base.substr(kWhiteoutPrefix.size());
  if (hidden == "..") return Bad("whiteout of '..': path escapes the root");
  if (hidden.empty() || hidden == ".") return Bad("whiteout names no file");
  entry->path.back() = hidden;
  entry->kind = Kind::kWhiteout;
  return Ok();
}

Status ClassifyLink(const char* target, Entry* entry) {
  auto link = SplitEntryPath(target);
  if (!link.ok()) return std::move(link).error().Wrap("hardlink target " + Quote(target));
  entry->link_path = std::move(link).value();
  if (entry->link_path.empty()) return Bad("hardlink to the root directory");
  entry->kind = Kind::kHardlink;
  return Ok();
}

Status ClassifyType(archive_entry* e, Entry* entry) {
  switch (archive_entry_filetype(e)) {
    case AE_IFREG:
      entry->kind = Kind::kFile;
      return Ok();
    case AE_IFDIR:
      entry->kind = Kind::kDirectory;
      return Ok();
    case AE_IFIFO:
      entry->kind = Kind::kFifo;
      return Ok();
    case AE_IFSOCK:
      return Ok();  // a socket is only meaningful while its server runs: skipped
    case AE_IFCHR:
    case AE_IFBLK:
      entry->kind = Kind::kDevice;
      return Ok();
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr) target = archive_entry_symlink_utf8(e);
      if (target == nullptr || *target == '\0') return Bad("empty symlink target");
      entry->symlink_target = target;
      entry->kind = Kind::kSymlink;
      return Ok();
    }
    default:
      return Bad("unsupported entry type");
  }
}

Result<Entry> Classify(archive_entry* e, const char* name) {
  if (name == nullptr) return Bad("entry without a name");
  Entry entry;
  FAAS_ASSIGN_OR_RETURN(entry.path, SplitEntryPath(name));
  if (entry.path.empty()) return entry;  // the root: its metadata belongs to the caller
  if (StartsWith(entry.path.back(), kWhiteoutPrefix)) {
    FAAS_RETURN_IF_ERROR(ClassifyWhiteout(&entry));
    return entry;
  }
  const char* hardlink = archive_entry_hardlink(e);
  if (hardlink == nullptr) hardlink = archive_entry_hardlink_utf8(e);
  if (hardlink != nullptr) {
    FAAS_RETURN_IF_ERROR(ClassifyLink(hardlink, &entry));
  } else {
    FAAS_RETURN_IF_ERROR(ClassifyType(e, &entry));
  }
  return entry;
}

// ---------------------------------------------------------------------------
// Filesystem side. Directories are reached only through OpenBeneath; the last
// component is then handled with *at() calls that do not follow it.

bool IsMissing(const Error& error) {
  return error.sys_errno == ENOENT || error.sys_errno == ENOTDIR;
}

Result<UniqueFd> OpenBeneath(int root_fd, const std::string& relative) {
  struct open_how how = {};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  const char* path = relative.empty() ? "." : relative.c_str();
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    int err = errno;
    // EAGAIN: a concurrent rename elsewhere on the system made the kernel give up.
    if ((err == EAGAIN || err == EINTR) && attempt < kOpenRetries) continue;
    if (err == EXDEV || err == ELOOP) return Error{Errc::kBadImage, err, "path escapes the root"};
    if (err == ENOENT || err == ENOTDIR) {
      return Error{Errc::kBadImage, err, "parent is missing or not a directory"};
    }
    if (err == ENAMETOOLONG) return Error{Errc::kBadImage, err, "path too long"};
    return FsError(err, "openat2");
  }
}

UniqueFd OpenDirectoryAt(int parent_fd, const std::string& name) {
  return UniqueFd(
      ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

Status RemoveDirectory(int parent_fd, const std::string& name) {
  UniqueFd dir = OpenDirectoryAt(parent_fd, name);
  if (!dir) return FsError(errno, "open directory");
  FAAS_RETURN_IF_ERROR(RemoveTreeContents(dir.get()));
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0) return FsError(errno, "rmdir");
  return Ok();
}

// What ClearWayFor found at the name.
enum class Cleared { kNothing, kRemoved, kRemovedDirectory, kKeptDirectory };

// Removes whatever is at `name` so that a new node can be created there; an existing
// directory is kept when `keep_directory`. Only names are removed: no inode is written.
Result<Cleared> ClearWayFor(int parent_fd, const std::string& name, bool keep_directory) {
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Cleared::kNothing;
    return FsError(errno, "stat");
  }
  if (S_ISDIR(st.st_mode)) {
    if (keep_directory) return Cleared::kKeptDirectory;
    FAAS_RETURN_IF_ERROR(RemoveDirectory(parent_fd, name));
    return Cleared::kRemovedDirectory;
  }
  if (::unlinkat(parent_fd, name.c_str(), 0) != 0) return FsError(errno, "unlink");
  return Cleared::kRemoved;
}

// Removes whatever is at `path` (nothing if its parent is missing): a whiteout, or
// the way cleared for a device node that is not created.
Status RemovePath(int root_fd, const std::vector<std::string>& path) {
  auto parent = OpenBeneath(root_fd, JoinPath(path, path.size() - 1));
  if (!parent.ok()) return IsMissing(parent.error()) ? Ok() : Status(std::move(parent).error());
  auto cleared = ClearWayFor(parent->get(), path.back(), /*keep_directory=*/false);
  if (!cleared.ok()) return std::move(cleared).error();
  return Ok();
}

Status ClearOpaqueDirectory(int root_fd, const std::vector<std::string>& path) {
  std::string parent_path = path.empty() ? "" : JoinPath(path, path.size() - 1);
  std::string name = path.empty() ? "." : path.back();
  auto parent = OpenBeneath(root_fd, parent_path);
  if (!parent.ok()) return IsMissing(parent.error()) ? Ok() : Status(std::move(parent).error());
  UniqueFd dir = OpenDirectoryAt(parent->get(), name);
  if (!dir) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return Ok();  // nothing below
    return FsError(errno, "open directory");
  }
  return RemoveTreeContents(dir.get());
}

// Runs `create` (an *at() call making a node: 0, or -1 with errno set); when the name
// is taken, `clear` clears the way and it runs once more. `what` names the call in errors.
template <typename Create, typename Clear>
Status CreateReplacing(const char* what, Create create, Clear clear) {
  if (create() == 0) return Ok();
  if (errno != EEXIST) return FsError(errno, what);
  FAAS_RETURN_IF_ERROR(clear());
  if (create() != 0) return FsError(errno, what);
  return Ok();
}

// ---------------------------------------------------------------------------
// Ownership, then mode (chown clears setuid/setgid), then times.

struct Metadata {
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;
  struct timespec times[2] = {};  // atime, mtime
};

struct timespec EntryTime(bool is_set, time_t sec, long nsec) {
  if (!is_set) return {0, UTIME_OMIT};
  if (nsec < 0 || nsec >= 1000000000) nsec = 0;
  return {sec, nsec};
}

Result<Metadata> MetadataOf(archive_entry* e, const IdMapping& ids) {
  int64_t uid = archive_entry_uid(e);
  int64_t gid = archive_entry_gid(e);
  if (uid < 0 || uid > kMaxId || gid < 0 || gid > kMaxId) return Bad("owner out of range");
  Metadata meta;
  meta.uid = static_cast<uid_t>(uid);
  meta.gid = static_cast<gid_t>(gid);
  meta.mode = archive_entry_mode(e) & 07777;
  if (ids.base != 0) {
    if (uid >= ids.size || gid >= ids.size) {
      return Bad("owned by " + std::to_string(uid) + ":" + std::to_string(gid) +
                 ", outside the user namespace's " + std::to_string(ids.size) + " ids");
    }
    meta.uid += ids.base;
    meta.gid += ids.base;
    // On the host such a file would run as the mapped id for anyone who can reach it;
    // containers have noNewPrivileges, so inside it would not work anyway.
    meta.mode &= 01777;
  }
  meta.times[1] =
      EntryTime(archive_entry_mtime_is_set(e), archive_entry_mtime(e), archive_entry_mtime_nsec(e));
  meta.times[0] = archive_entry_atime_is_set(e)
                      ? EntryTime(true, archive_entry_atime(e), archive_entry_atime_nsec(e))
                      : meta.times[1];
  return meta;
}

Status SetMetadataFd(int fd, const Metadata& meta) {
  if (::fchown(fd, meta.uid, meta.gid) != 0) return FsError(errno, "chown");
  if (::fchmod(fd, meta.mode) != 0) return FsError(errno, "chmod");
  if (::futimens(fd, meta.times) != 0) return FsError(errno, "set times");
  return Ok();
}

Status SetMetadataAt(int dir_fd, const std::string& name, const Metadata& meta, bool symlink) {
  if (::fchownat(dir_fd, name.c_str(), meta.uid, meta.gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return FsError(errno, "chown");
  }
  // Only reached for a node we have just created (never a symlink), so following is moot.
  if (!symlink && ::fchmodat(dir_fd, name.c_str(), meta.mode, 0) != 0) {
    return FsError(errno, "chmod");
  }
  if (::utimensat(dir_fd, name.c_str(), meta.times, AT_SYMLINK_NOFOLLOW) != 0) {
    return FsError(errno, "set times");
  }
  return Ok();
}

// A directory the tar did not list: made as docker makes it.
Status SetImplicitDirectory(int dir_fd, const IdMapping& ids) {
  if (ids.base != 0 && ::fchown(dir_fd, ids.base, ids.base) != 0) return FsError(errno, "chown");
  if (::fchmod(dir_fd, 0755) != 0) return FsError(errno, "chmod");
  return Ok();
}

// Tar files need not list every directory: the missing parents of `path` are made
// beneath `root_fd` as docker makes them; `made` (optional, bounded by `max_made`)
// receives their paths. Returns the parent.
Result<UniqueFd> MakeParents(int root_fd, const std::vector<std::string>& path,
                             const IdMapping& ids, std::unordered_set<std::string>* made,
                             size_t max_made) {
  FAAS_ASSIGN_OR_RETURN(UniqueFd dir, OpenBeneath(root_fd, ""));
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    std::string prefix = JoinPath(path, i + 1);
    auto next = OpenBeneath(root_fd, prefix);
    if (!next.ok() && next.error().sys_errno == ENOENT) {
      if (::mkdirat(dir.get(), path[i].c_str(), 0755) != 0) {
        if (errno != EEXIST) return FsError(errno, "mkdir " + Quote(prefix));
      } else {
        UniqueFd created = OpenDirectoryAt(dir.get(), path[i]);
        if (!created) return FsError(errno, "open directory " + Quote(prefix));
        FAAS_RETURN_IF_ERROR(SetImplicitDirectory(created.get(), ids));
        if (made != nullptr && made->size() < max_made) made->insert(prefix);
      }
      next = OpenBeneath(root_fd, prefix);
    }
    if (!next.ok()) return std::move(next).error();
    dir = std::move(next).value();
  }
  return dir;
}

// ---------------------------------------------------------------------------
// A layer's `meta`: records of a type byte, a path and, for links, the target, each
// NUL-terminated; the counts last. Written and read in order, never held whole.

constexpr char kMetaWhiteout = 'W';
constexpr char kMetaOpaque = 'O';
constexpr char kMetaDevice = 'D';
constexpr char kMetaLink = 'L';      // a hard link to a file of a layer below
constexpr char kMetaImplicit = 'I';  // a directory the tar did not list
constexpr char kMetaCounts = 'C';
constexpr const char* kMetaName = "meta";
constexpr const char* kTreeName = "tree";
constexpr size_t kMetaBuffer = 64 * 1024;
// Past this many unlisted directories in one layer, the rest take the owner and mode
// docker gives them (root, 0755) instead of keeping those of the layers below.
constexpr size_t kMaxImplicitDirectories = 65536;

class MetaWriter {
 public:
  explicit MetaWriter(UniqueFd fd) : fd_(std::move(fd)) {}
  Status Add(char type, const std::string& path, const std::string& second = {}) {
    buffer_ += type;
    buffer_ += path;
    buffer_ += '\0';
    if (type == kMetaLink || type == kMetaCounts) {
      buffer_ += second;
      buffer_ += '\0';
    }
    return buffer_.size() >= kMetaBuffer ? Flush() : Ok();
  }
  Status Flush() {
    Status written = WriteAll(fd_.get(), buffer_);
    buffer_.clear();
    return written;
  }

 private:
  UniqueFd fd_;
  std::string buffer_;
};

struct MetaRecord {
  char type = 0;
  std::string path;
  std::string second;
};

class MetaReader {
 public:
  static Result<MetaReader> Open(int layer_fd) {
    UniqueFd fd(::openat(layer_fd, kMetaName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return SysError(errno, "open the layer's meta");
    return MetaReader(std::move(fd));
  }
  // False after the last record.
  Result<bool> Next(MetaRecord* record) {
    FAAS_ASSIGN_OR_RETURN(bool more, Field(&record->path));
    if (!more) return false;
    record->type = record->path.empty() ? 0 : record->path[0];
    record->path.erase(0, 1);
    record->second.clear();
    if (record->type == kMetaLink || record->type == kMetaCounts) {
      FAAS_ASSIGN_OR_RETURN(bool second, Field(&record->second));
      if (!second) return Corrupt();
    }
    return true;
  }

 private:
  explicit MetaReader(UniqueFd fd) : fd_(std::move(fd)) {}
  static Error Corrupt() { return MakeError(Errc::kIo, "the layer's meta is corrupt"); }
  Result<bool> Field(std::string* out) {
    out->clear();
    for (;;) {
      size_t nul = buffer_.find('\0', pos_);
      if (nul != std::string::npos) {
        out->append(buffer_, pos_, nul - pos_);
        pos_ = nul + 1;
        return true;
      }
      out->append(buffer_, pos_, std::string::npos);
      buffer_.resize(kMetaBuffer);
      ssize_t n;
      while ((n = ::read(fd_.get(), buffer_.data(), buffer_.size())) < 0 && errno == EINTR) {
      }
      if (n < 0) return SysError(errno, "read the layer's meta");
      buffer_.resize(static_cast<size_t>(n));
      pos_ = 0;
      if (n == 0) {
        if (!out->empty()) return Corrupt();
        return false;
      }
    }
  }

  UniqueFd fd_;
  std::string buffer_;
  size_t pos_ = 0;
};

// Calls `visit` with each record of the layer's meta, in order, up to its first error.
template <typename Visit>
Status ForEachRecord(int layer_fd, Visit visit) {
  FAAS_ASSIGN_OR_RETURN(MetaReader reader, MetaReader::Open(layer_fd));
  MetaRecord record;
  for (;;) {
    FAAS_ASSIGN_OR_RETURN(bool more, reader.Next(&record));
    if (!more) return Ok();
    FAAS_RETURN_IF_ERROR(visit(record));
  }
}

std::vector<std::string> SplitStored(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size() && !path.empty()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

void AddDevicePath(const std::string& path, std::unordered_set<std::string>* paths, size_t* bytes) {
  if (*bytes + path.size() > kMaxDevicePathBytes) return;
  if (paths->insert(path).second) *bytes += path.size();
}

// ---------------------------------------------------------------------------
// Writing data.

Status PwriteAll(int fd, const char* data, size_t size, uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FsError(errno, "write");
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Ok();
}

// Copies `size` bytes from `in_fd` at `offset` into `out_fd` in the kernel (or shares the
// blocks, on filesystems with reflinks). False when the kernel cannot do it here (the
// caller then copies itself); nothing was written then.
Result<bool> CopyRange(int in_fd, off_t offset, int out_fd, uint64_t size) {
  for (uint64_t left = size; left > 0;) {
    ssize_t n = ::copy_file_range(in_fd, &offset, out_fd, nullptr, left, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && left == size &&
        (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) {
      return false;
    }
    if (n < 0) return FsError(errno, "copy");
    if (n == 0) return Bad("truncated tar: file data ends early");
    left -= static_cast<uint64_t>(n);
  }
  return true;
}

// A plain file in a plain tar lies in the blob in one piece, right after its header.
Result<bool> CopyInKernel(const LayerReader& reader, archive_entry* e, int fd, uint64_t size) {
  if (reader.plain_fd() < 0 || archive_entry_sparse_count(e) > 0) return false;
  auto offset = static_cast<off_t>(archive_filter_bytes(reader.tar(), 0));
  return CopyRange(reader.plain_fd(), offset, fd, size);
}

// Writes the entry's data blocks at their offsets: holes of sparse files stay holes.
Status CopyData(const LayerReader& reader, int fd, uint64_t size) {
  for (;;) {
    const void* block = nullptr;
    size_t length = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(reader.tar(), &block, &length, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return reader.ReadError();
    if (offset < 0 || static_cast<uint64_t>(offset) > size ||
        length > size - static_cast<uint64_t>(offset)) {
      return Bad("data beyond the file size");
    }
    FAAS_RETURN_IF_ERROR(
        PwriteAll(fd, static_cast<const char*>(block), length, static_cast<uint64_t>(offset)));
  }
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return FsError(errno, "truncate");
  return Ok();
}

uint64_t DeclaredSize(archive_entry* e) {
  la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
  return size > 0 ? static_cast<uint64_t>(size) : 0;
}

// ---------------------------------------------------------------------------
// Extracting one layer into a directory of its own.

// Entries created inside a directory later in the layer change its mtime, so its times
// are set again once the layer is complete (as docker does). Bounded: past the cap a
// directory keeps the times of its own entry, possibly bumped by later children.
constexpr size_t kMaxDeferredDirectories = 65536;

struct DeferredTimes {
  std::vector<std::string> path;
  struct timespec times[2];
};

class Extractor {
 public:
  Extractor(int tree_fd, MetaWriter* meta, const LayerLimits& limits, LayerTotals* totals)
      : tree_(tree_fd), meta_(meta), limits_(limits), totals_(totals) {}

  Status Add(const LayerReader& reader, archive_entry* e, Entry* entry);
  // Restores directory times and writes the records kept until the end.
  Status Finish(const LayerTotals& before);

 private:
  Status Check(archive_entry* e, const Entry& entry);
  // The directory `path` is in, made when missing; cached for the next entry.
  Result<int> Parent(const std::vector<std::string>& path);
  Result<bool> Replace(int parent_fd, const std::string& name, bool keep_directory);
  Status WriteFile(const LayerReader& reader, archive_entry* e, int parent_fd,
                   const std::string& name);
  Status WriteDirectory(archive_entry* e, const Entry& entry, int parent_fd);
  Status WriteSymlink(archive_entry* e, const Entry& entry, int parent_fd);
  Status WriteFifo(archive_entry* e, int parent_fd, const std::string& name);
  Status WriteHardlink(const Entry& entry, int parent_fd);
  Status SkipDevice(const Entry& entry);
  // The cached parent may be gone (a directory was removed): looked up again next time.
  // Its fd stays open until then, as the entry being written may still use it.
  void ForgetParent() { parent_valid_ = false; }

  int tree_;
  MetaWriter* meta_;
  const LayerLimits& limits_;
  LayerTotals* totals_;
  UniqueFd parent_;
  std::string parent_path_;
  bool parent_valid_ = false;
  std::string first_device_;  // this layer's first
  std::vector<DeferredTimes> deferred_;
  std::unordered_set<std::string> implicit_;
  std::unordered_set<std::string> devices_;
  size_t device_bytes_ = 0;
};

Result<int> Extractor::Parent(const std::vector<std::string>& path) {
  std::string dir = JoinPath(path, path.size() - 1);
  if (parent_valid_ && dir == parent_path_) return parent_.get();
  parent_valid_ = false;
  auto opened = OpenBeneath(tree_, dir);
  if (!opened.ok() && opened.error().sys_errno == ENOENT) {
    opened = MakeParents(tree_, path, limits_.ids, &implicit_, kMaxImplicitDirectories);
  }
  if (!opened.ok()) return std::move(opened).error();
  parent_ = std::move(opened).value();
  parent_path_ = std::move(dir);
  parent_valid_ = true;
  return parent_.get();
}

// Clears the way at a name that is taken; forgets the cached parent when a directory
// went (it may be the parent or above it). Returns whether a directory was kept.
Result<bool> Extractor::Replace(int parent_fd, const std::string& name, bool keep_directory) {
  FAAS_ASSIGN_OR_RETURN(Cleared cleared, ClearWayFor(parent_fd, name, keep_directory));
  if (cleared == Cleared::kRemovedDirectory) ForgetParent();
  return cleared == Cleared::kKeptDirectory;
}

Status Extractor::WriteFile(const LayerReader& reader, archive_entry* e, int parent_fd,
                            const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e, limits_.ids));
  auto create = [&] {
    return ::openat(parent_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  };
  // A layer usually creates what is not there yet: the way is cleared only when taken.
  UniqueFd file(create());
  if (!file && errno == EEXIST) {
    FAAS_RETURN_IF_ERROR(Replace(parent_fd, name, /*keep_directory=*/false));
    // The parent fd stays valid: only the entry's own name was removed.
    file = UniqueFd(create());
  }
  if (!file) return FsError(errno, "create");
  FAAS_ASSIGN_OR_RETURN(bool copied, CopyInKernel(reader, e, file.get(), DeclaredSize(e)));
  if (!copied) FAAS_RETURN_IF_ERROR(CopyData(reader, file.get(), DeclaredSize(e)));
  return SetMetadataFd(file.get(), meta);
}

Status Extractor::WriteDirectory(archive_entry* e, const Entry& entry, int parent_fd) {
  const std::string& name = entry.path.back();
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e, limits_.ids));
  if (::mkdirat(parent_fd, name.c_str(), 0700) != 0) {
    if (errno != EEXIST) return FsError(errno, "mkdir");
    FAAS_ASSIGN_OR_RETURN(bool kept, Replace(parent_fd, name, /*keep_directory=*/true));
    if (kept) {
      if (!implicit_.empty()) implicit_.erase(JoinPath(entry.path));
    } else if (::mkdirat(parent_fd, name.c_str(), 0700) != 0) {
      return FsError(errno, "mkdir");
    }
  }
  UniqueFd dir = OpenDirectoryAt(parent_fd, name);
  if (!dir) return FsError(errno, "open directory");
  if (deferred_.size() < kMaxDeferredDirectories) {
    deferred_.push_back({entry.path, {meta.times[0], meta.times[1]}});
  }
  return SetMetadataFd(dir.get(), meta);
}

Status Extractor::WriteSymlink(archive_entry* e, const Entry& entry, int parent_fd) {
  const std::string& name = entry.path.back();
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e, limits_.ids));
  FAAS_RETURN_IF_ERROR(CreateReplacing(
      "symlink", [&] { return ::symlinkat(entry.symlink_target.c_str(), parent_fd, name.c_str()); },
      [&] { return Replace(parent_fd, name, /*keep_directory=*/false); }));
  return SetMetadataAt(parent_fd, name, meta, /*symlink=*/true);
}

Status Extractor::WriteFifo(archive_entry* e, int parent_fd, const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e, limits_.ids));
  FAAS_RETURN_IF_ERROR(CreateReplacing(
      "mkfifo", [&] { return ::mknodat(parent_fd, name.c_str(), S_IFIFO | 0600, 0); },
      [&] { return Replace(parent_fd, name, /*keep_directory=*/false); }));
  return SetMetadataAt(parent_fd, name, meta, /*symlink=*/false);
}

// The link shares the target's inode, hence its metadata: the header's is not applied.
// A target this layer does not have is in a layer below: the link is made on merging.
Status Extractor::WriteHardlink(const Entry& entry, int parent_fd) {
  if (entry.link_path == entry.path) return Ok();  // a link to itself changes nothing
  const std::string target_path = JoinPath(entry.link_path);
  auto target_dir = OpenBeneath(tree_, JoinPath(entry.link_path, entry.link_path.size() - 1));
  if (!target_dir.ok() && !IsMissing(target_dir.error())) {
    return std::move(target_dir).error().Wrap("hardlink target");
  }
  struct stat st;
  bool here = false;
  if (target_dir.ok()) {
    here =
        ::fstatat(target_dir->get(), entry.link_path.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!here && errno != ENOENT) return FsError(errno, "stat hardlink target");
  }
  if (!here) {
    if (devices_.count(target_path) != 0) return SkipDevice(entry);
    // What this layer had at the link's path goes; the link replaces it on merging.
    FAAS_RETURN_IF_ERROR(Replace(parent_fd, entry.path.back(), /*keep_directory=*/false));
    return meta_->Add(kMetaLink, JoinPath(entry.path), target_path);
  }
  if (S_ISDIR(st.st_mode)) return Bad("hardlink to a directory");
  const std::string& name = entry.path.back();
  return CreateReplacing(
      "link",
      [&] {
        return ::linkat(target_dir->get(), entry.link_path.back().c_str(), parent_fd, name.c_str(),
                        0);
      },
      [&] { return Replace(parent_fd, name, /*keep_directory=*/false); });
}

// A device node replaces what was at its path, here and (on merging) below.
Status Extractor::SkipDevice(const Entry& entry) {
  const std::string path = JoinPath(entry.path);
  if (totals_->devices++ == 0) totals_->first_device = "/" + path;
  if (first_device_.empty()) first_device_ = "/" + path;
  AddDevicePath(path, &devices_, &device_bytes_);
  ForgetParent();
  FAAS_RETURN_IF_ERROR(RemovePath(tree_, entry.path));
  return meta_->Add(kMetaDevice, path);
}

Status Extractor::Check(archive_entry* e, const Entry& entry) {
  if (++totals_->files > limits_.max_files) {
    return MakeError(Errc::kTooLarge,
                     "more than " + std::to_string(limits_.max_files) + " entries in the image");
  }
  const size_t depth = entry.path.size() + (entry.kind == Kind::kOpaque ? 1 : 0);
  if (depth > limits_.max_depth) {
    // A deep tree costs every walk over it and its paths exceed PATH_MAX. The message
    // shows only the path's start.
    std::string start = JoinPath(entry.path, std::min<size_t>(entry.path.size(), 3));
    return Bad("path " + start + "/... is " + std::to_string(depth) +
               " levels deep; the limit is " + std::to_string(limits_.max_depth));
  }
  if (entry.kind != Kind::kFile) return Ok();
  uint64_t size = DeclaredSize(e);
  if (size > limits_.max_rootfs_bytes - totals_->rootfs_bytes) {
    return MakeError(Errc::kTooLarge, "unpacked files exceed " +
                                          std::to_string(limits_.max_rootfs_bytes) + " bytes");
  }
  totals_->rootfs_bytes += size;
  return Ok();
}

Status Extractor::Add(const LayerReader& reader, archive_entry* e, Entry* entry) {
  FAAS_RETURN_IF_ERROR(Check(e, *entry));
  switch (entry->kind) {
    case Kind::kSkip:
      return Ok();
    case Kind::kWhiteout:
      return meta_->Add(kMetaWhiteout, JoinPath(entry->path));
    case Kind::kOpaque:
      return meta_->Add(kMetaOpaque, JoinPath(entry->path));
    case Kind::kDevice:
      return SkipDevice(*entry);
    default:
      break;
  }
  FAAS_ASSIGN_OR_RETURN(int parent, Parent(entry->path));
  switch (entry->kind) {
    case Kind::kFile:
      return WriteFile(reader, e, parent, entry->path.back());
    case Kind::kDirectory:
      return WriteDirectory(e, *entry, parent);
    case Kind::kSymlink:
      return WriteSymlink(e, *entry, parent);
    case Kind::kFifo:
      return WriteFifo(e, parent, entry->path.back());
    case Kind::kHardlink:
      return WriteHardlink(*entry, parent);
    default:
      return Ok();
  }
}

// A directory replaced later in the same layer is simply skipped.
Status Extractor::Finish(const LayerTotals& before) {
  ForgetParent();
  for (const DeferredTimes& d : deferred_) {
    auto parent = OpenBeneath(tree_, JoinPath(d.path, d.path.size() - 1));
    if (!parent.ok()) continue;
    UniqueFd dir = OpenDirectoryAt(parent->get(), d.path.back());
    if (dir && ::futimens(dir.get(), d.times) != 0) return FsError(errno, "set times");
  }
  for (const std::string& path : implicit_) FAAS_RETURN_IF_ERROR(meta_->Add(kMetaImplicit, path));
  std::string counts = std::to_string(totals_->files - before.files) + " " +
                       std::to_string(totals_->rootfs_bytes - before.rootfs_bytes) + " " +
                       std::to_string(totals_->tar_bytes - before.tar_bytes) + " " +
                       std::to_string(totals_->devices - before.devices);
  FAAS_RETURN_IF_ERROR(meta_->Add(kMetaCounts, counts, first_device_));
  return meta_->Flush();
}

Error WithEntry(Error error, const char* name) {
  return std::move(error).Wrap("entry " + Quote(name != nullptr ? name : ""));
}

Result<UniqueFd> OpenLayerTree(int layer_fd) {
  UniqueFd tree = OpenDirectoryAt(layer_fd, kTreeName);
  if (!tree) return SysError(errno, "open the layer's tree");
  return tree;
}

// ---------------------------------------------------------------------------
// Merging an extracted layer into a tree.

// The owner, mode and times of a node of a stored layer, to give a copy of it.
Metadata MetadataOfNode(const struct stat& st) {
  Metadata meta;
  meta.uid = st.st_uid;
  meta.gid = st.st_gid;
  meta.mode = st.st_mode & 07777;
  meta.times[0] = st.st_atim;
  meta.times[1] = st.st_mtim;
  return meta;
}

// A node the tree cannot share (too many links, another filesystem): copied.
Status CopyNode(int from_fd, int to_fd, const std::string& name) {
  struct stat st;
  if (::fstatat(from_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return FsError(errno, "stat");
  }
  const Metadata meta = MetadataOfNode(st);
  if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    ssize_t n = ::readlinkat(from_fd, name.c_str(), target.data(), target.size());
    if (n < 0) return FsError(errno, "readlink");
    target.resize(static_cast<size_t>(n));
    if (::symlinkat(target.c_str(), to_fd, name.c_str()) != 0) return FsError(errno, "symlink");
    return SetMetadataAt(to_fd, name, meta, /*symlink=*/true);
  }
  if (S_ISFIFO(st.st_mode)) {
    if (::mknodat(to_fd, name.c_str(), S_IFIFO | 0600, 0) != 0) return FsError(errno, "mkfifo");
    return SetMetadataAt(to_fd, name, meta, /*symlink=*/false);
  }
  if (!S_ISREG(st.st_mode)) return Ok();
  UniqueFd in(::openat(from_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!in) return FsError(errno, "open");
  UniqueFd out(
      ::openat(to_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return FsError(errno, "create");
  FAAS_ASSIGN_OR_RETURN(bool copied,
                        CopyRange(in.get(), 0, out.get(), static_cast<uint64_t>(st.st_size)));
  if (!copied) {
    auto buffer = std::make_unique<char[]>(kBufferSize);
    uint64_t offset = 0;
    for (;;) {
      ssize_t n = ::read(in.get(), buffer.get(), kBufferSize);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return FsError(errno, "read");
      if (n == 0) break;
      FAAS_RETURN_IF_ERROR(PwriteAll(out.get(), buffer.get(), static_cast<size_t>(n), offset));
      offset += static_cast<uint64_t>(n);
    }
  }
  return SetMetadataFd(out.get(), meta);
}

// Links the layer's node `name` into `to_fd` in place of whatever is there.
Status LinkNode(int from_fd, int to_fd, const std::string& name) {
  auto link = [&] { return ::linkat(from_fd, name.c_str(), to_fd, name.c_str(), 0); };
  if (link() == 0) return Ok();
  int err = errno;
  if (err == EEXIST) {
    FAAS_ASSIGN_OR_RETURN(Cleared cleared, ClearWayFor(to_fd, name, /*keep_directory=*/false));
    (void)cleared;
    if (link() == 0) return Ok();
    err = errno;
  }
  if (err == EMLINK || err == EXDEV) return CopyNode(from_fd, to_fd, name);
  return SysError(err, "link", Errc::kIo);
}

class Merger {
 public:
  Merger(int root_fd, const LayerLimits& limits, std::unordered_set<std::string> implicit)
      : root_fd_(root_fd), limits_(limits), implicit_(std::move(implicit)) {}
  Status Directory(int from_fd, int to_fd, const std::string& path, size_t depth);

 private:
  Status Subdirectory(int from_fd, int to_fd, const std::string& name, const std::string& path,
                      size_t depth);

  int root_fd_;
  const LayerLimits& limits_;
  std::unordered_set<std::string> implicit_;
};

Status Merger::Directory(int from_fd, int to_fd, const std::string& path, size_t depth) {
  if (depth > limits_.max_depth + 1) return MakeError(Errc::kIo, "the layer's tree is too deep");
  int dup_fd = ::fcntl(from_fd, F_DUPFD_CLOEXEC, 0);
  DIR* dir = dup_fd < 0 ? nullptr : ::fdopendir(dup_fd);
  if (dir == nullptr) {
    if (dup_fd >= 0) ::close(dup_fd);
    return FsError(errno, "read the layer's directory");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, ::closedir);
  while (dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    unsigned char type = ent->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (::fstatat(from_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return FsError(errno, "stat");
      }
      type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
    }
    std::string child = path.empty() ? name : path + "/" + name;
    if (type == DT_DIR) {
      FAAS_RETURN_IF_ERROR(Subdirectory(from_fd, to_fd, name, child, depth));
    } else if (Status linked = LinkNode(from_fd, to_fd, name); !linked.ok()) {
      return std::move(linked).error().Wrap(Quote("/" + child));
    }
  }
  return Ok();
}

// A directory is made (or kept), filled, and then takes the layer's owner, mode and
// times (after its entries, which change its mtime) unless the tar did not list it.
Status Merger::Subdirectory(int from_fd, int to_fd, const std::string& name,
                            const std::string& path, size_t depth) {
  const bool implicit = !implicit_.empty() && implicit_.count(path) != 0;
  struct stat st;
  if (implicit && ::fstatat(to_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISLNK(st.st_mode)) {
    // As when layers are applied one onto the other: a directory the tar did not list
    // is reached through a symlink of the layers below, if it stays beneath the root.
    auto to = OpenBeneath(root_fd_, path);
    if (!to.ok()) return std::move(to).error().Wrap(Quote("/" + path));
    UniqueFd from = OpenDirectoryAt(from_fd, name);
    if (!from) return FsError(errno, "open the layer's directory");
    return Directory(from.get(), to->get(), path, depth + 1);
  }
  bool created = ::mkdirat(to_fd, name.c_str(), 0700) == 0;
  if (!created) {
    if (errno != EEXIST) return FsError(errno, "mkdir");
    FAAS_ASSIGN_OR_RETURN(Cleared cleared, ClearWayFor(to_fd, name, /*keep_directory=*/true));
    if (cleared != Cleared::kKeptDirectory) {
      if (::mkdirat(to_fd, name.c_str(), 0700) != 0) return FsError(errno, "mkdir");
      created = true;
    }
  }
  UniqueFd from = OpenDirectoryAt(from_fd, name);
  if (!from) return FsError(errno, "open the layer's directory");
  UniqueFd to = OpenDirectoryAt(to_fd, name);
  if (!to) return FsError(errno, "open directory");
  FAAS_RETURN_IF_ERROR(Directory(from.get(), to.get(), path, depth + 1));
  if (implicit) return created ? SetImplicitDirectory(to.get(), limits_.ids) : Ok();
  if (::fstat(from.get(), &st) != 0) return FsError(errno, "stat");
  return SetMetadataFd(to.get(), MetadataOfNode(st));
}

// A hard link to a file of a layer below, made before the layer's tree is merged (an
// entry of the tree at the same path came later in the tar and replaces it).
Status MergeLink(int rootfs_fd, const MetaRecord& record, const LayerLimits& limits,
                 MergeState* state) {
  std::vector<std::string> path = SplitStored(record.path);
  std::vector<std::string> target = SplitStored(record.second);
  if (path.empty() || target.empty()) return MakeError(Errc::kIo, "the layer's meta is corrupt");
  auto target_dir = OpenBeneath(rootfs_fd, JoinPath(target, target.size() - 1));
  struct stat st;
  bool found = target_dir.ok() &&
               ::fstatat(target_dir->get(), target.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!found && state->device_paths.count(record.second) != 0) {
    if (state->linked_devices++ == 0) state->first_linked_device = "/" + record.path;
    return RemovePath(rootfs_fd, path);
  }
  if (!found) return Bad("hardlink target does not exist");
  if (S_ISDIR(st.st_mode)) return Bad("hardlink to a directory");
  auto parent = OpenBeneath(rootfs_fd, JoinPath(path, path.size() - 1));
  if (!parent.ok() && parent.error().sys_errno == ENOENT) {
    // Parents the layer lists take their metadata when its tree is merged, next.
    parent = MakeParents(rootfs_fd, path, limits.ids, nullptr, 0);
  }
  if (!parent.ok()) return std::move(parent).error();
  return CreateReplacing(
      "link",
      [&] {
        return ::linkat(target_dir->get(), target.back().c_str(), parent->get(),
                        path.back().c_str(), 0);
      },
      [&] { return ClearWayFor(parent->get(), path.back(), /*keep_directory=*/false); });
}

// Extracts what `reader` (open) reads into the layer directory `layer_fd`.
Status ExtractFrom(LayerReader& reader, int layer_fd, const LayerLimits& limits,
                   LayerTotals* totals) {
  if (::mkdirat(layer_fd, kTreeName, 0700) != 0) return SysError(errno, "mkdir the layer's tree");
  FAAS_ASSIGN_OR_RETURN(UniqueFd tree, OpenLayerTree(layer_fd));
  UniqueFd meta_fd(
      ::openat(layer_fd, kMetaName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!meta_fd) return SysError(errno, "create the layer's meta");
  MetaWriter meta(std::move(meta_fd));
  const LayerTotals before = *totals;
  Extractor extractor(tree.get(), &meta, limits, totals);
  for (;;) {
    FAAS_ASSIGN_OR_RETURN(archive_entry * e, reader.Next());
    if (e == nullptr) break;
    const char* name = EntryName(e);
    auto entry = Classify(e, name);
    if (!entry.ok()) return WithEntry(std::move(entry).error(), name);
    Status status = extractor.Add(reader, e, &*entry);
    if (!status.ok()) return WithEntry(std::move(status).error(), name);
  }
  FAAS_RETURN_IF_ERROR(reader.Drain());
  totals->tar_bytes += reader.bytes();
  return extractor.Finish(before);
}

uint64_t TarBudget(const LayerLimits& limits, const LayerTotals& totals) {
  return limits.max_tar_bytes - std::min(limits.max_tar_bytes, totals.tar_bytes);
}

}  // namespace

Status ExtractLayer(int blob_fd, int layer_fd, const std::string& expected_diff_id,
                    const LayerLimits& limits, LayerTotals* totals, bool blob_is_diff_id) {
  Sha256 hash;
  LayerReader reader;
  if (blob_is_diff_id) {
    FAAS_RETURN_IF_ERROR(reader.OpenPlainTar(blob_fd, TarBudget(limits, *totals)));
  } else {
    FAAS_RETURN_IF_ERROR(reader.Open(blob_fd, &hash, TarBudget(limits, *totals)));
  }
  FAAS_RETURN_IF_ERROR(ExtractFrom(reader, layer_fd, limits, totals));
  if (blob_is_diff_id) return Ok();
  std::string actual = "sha256:" + hash.FinalHex();
  if (!expected_diff_id.empty() && actual != expected_diff_id) {
    return Bad("digest mismatch: expected " + ShortDigest(expected_diff_id) + ", content has " +
               ShortDigest(actual));
  }
  return Ok();
}

Result<std::string> ExtractLayerFrom(const LayerStreamReader& read, int layer_fd,
                                     const LayerLimits& limits, LayerTotals* totals) {
  Sha256 hash;
  LayerReader reader;
  FAAS_RETURN_IF_ERROR(reader.OpenStream(&read, &hash, TarBudget(limits, *totals)));
  FAAS_RETURN_IF_ERROR(ExtractFrom(reader, layer_fd, limits, totals));
  return reader.compressed() ? "sha256:" + hash.FinalHex() : std::string();
}

Result<LayerTotals> ReadLayerCounts(int layer_fd) {
  std::optional<LayerTotals> counts;
  FAAS_RETURN_IF_ERROR(ForEachRecord(layer_fd, [&](const MetaRecord& record) -> Status {
    if (record.type != kMetaCounts) return Ok();
    unsigned long long files = 0, rootfs = 0, tar = 0, devices = 0;
    if (std::sscanf(record.path.c_str(), "%llu %llu %llu %llu", &files, &rootfs, &tar, &devices) !=
        4) {
      return MakeError(Errc::kIo, "the layer's meta is corrupt");
    }
    counts = LayerTotals{.files = files,
                         .rootfs_bytes = rootfs,
                         .tar_bytes = tar,
                         .devices = devices,
                         .first_device = record.second};
    return Ok();
  }));
  if (!counts) return MakeError(Errc::kIo, "the layer's meta has no counts");
  return *counts;
}

Status MergeLayer(int layer_fd, int rootfs_fd, const LayerLimits& limits, MergeState* state) {
  // What the layer removes from those below goes first, then its links to their files.
  std::unordered_set<std::string> implicit;
  FAAS_RETURN_IF_ERROR(ForEachRecord(layer_fd, [&](const MetaRecord& record) -> Status {
    std::vector<std::string> path = SplitStored(record.path);
    Status status;
    switch (record.type) {
      case kMetaWhiteout:
      case kMetaDevice:
        if (path.empty()) return MakeError(Errc::kIo, "the layer's meta is corrupt");
        status = RemovePath(rootfs_fd, path);
        if (record.type == kMetaDevice) {
          AddDevicePath(record.path, &state->device_paths, &state->device_path_bytes);
        }
        break;
      case kMetaOpaque:
        status = ClearOpaqueDirectory(rootfs_fd, path);
        break;
      case kMetaImplicit:
        implicit.insert(record.path);
        break;
      default:
        break;
    }
    if (!status.ok()) return WithEntry(std::move(status).error(), record.path.c_str());
    return Ok();
  }));
  FAAS_RETURN_IF_ERROR(ForEachRecord(layer_fd, [&](const MetaRecord& record) -> Status {
    if (record.type != kMetaLink) return Ok();
    Status status = MergeLink(rootfs_fd, record, limits, state);
    if (!status.ok()) return WithEntry(std::move(status).error(), record.path.c_str());
    return Ok();
  }));
  FAAS_ASSIGN_OR_RETURN(UniqueFd tree, OpenLayerTree(layer_fd));
  UniqueFd root(::openat(rootfs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return FsError(errno, "open the tree");
  Merger merger(root.get(), limits, std::move(implicit));
  return merger.Directory(tree.get(), root.get(), "", 0);
}

Result<UniqueFd> OpenDirBeneath(int root_fd, const std::string& relative) {
  return OpenBeneath(root_fd, relative);
}

}  // namespace faas::image
