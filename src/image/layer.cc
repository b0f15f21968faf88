#include "image/layer.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/file.h"
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

 private:
  ArchiveReader decompressor_;
  ArchiveReader tar_;
  TarStream stream_;
  int plain_fd_ = -1;
};

Status LayerReader::Open(int blob_fd, Sha256* hash, uint64_t max_bytes) {
  if (::lseek(blob_fd, 0, SEEK_SET) < 0) return SysError(errno, "seek layer blob");
  decompressor_ = NewDecompressReader();
  tar_ = NewTarReader(/*allow_empty=*/true);
  if (!decompressor_ || !tar_) return MakeError(Errc::kInternal, "libarchive: out of memory");
  stream_.decompressor = decompressor_.get();
  stream_.hash = hash;
  stream_.max_bytes = max_bytes;
  archive_entry* raw = nullptr;
  int r = archive_read_open_fd(decompressor_.get(), blob_fd, kBufferSize);
  if (r == ARCHIVE_OK) r = archive_read_next_header(decompressor_.get(), &raw);
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

// A hard link to a skipped device node is a device node too. Both passes call this
// for every entry in order, each on its own copy of the paths as they were before the
// layer, so that they decide alike.
void TrackDevices(Entry* entry, LayerTotals* totals) {
  auto& paths = totals->device_paths;
  if (entry->kind == Kind::kSkip) return;
  if (paths.empty() && entry->kind != Kind::kDevice) return;  // the usual case: no copy
  std::string path = JoinPath(entry->path);
  if (entry->kind == Kind::kHardlink && paths.count(JoinPath(entry->link_path)) != 0) {
    entry->kind = Kind::kDevice;
  }
  if (entry->kind != Kind::kDevice) {
    if (paths.erase(path) != 0) totals->device_path_bytes -= path.size();
    return;
  }
  if (totals->device_path_bytes + path.size() > kMaxDevicePathBytes) return;
  if (paths.insert(path).second) totals->device_path_bytes += path.size();
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

// Tar files need not list every directory: create the missing ones, as docker does.
Result<UniqueFd> MakeParents(int root_fd, const std::vector<std::string>& path) {
  FAAS_ASSIGN_OR_RETURN(UniqueFd dir, OpenBeneath(root_fd, ""));
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    std::string prefix = JoinPath(path, i + 1);
    auto next = OpenBeneath(root_fd, prefix);
    if (!next.ok() && next.error().sys_errno == ENOENT) {
      if (::mkdirat(dir.get(), path[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return FsError(errno, "mkdir " + Quote(prefix));
      }
      next = OpenBeneath(root_fd, prefix);
    }
    if (!next.ok()) return std::move(next).error();
    dir = std::move(next).value();
  }
  return dir;
}

Result<UniqueFd> OpenParent(int root_fd, const std::vector<std::string>& path) {
  auto parent = OpenBeneath(root_fd, JoinPath(path, path.size() - 1));
  if (parent.ok() || parent.error().sys_errno != ENOENT) return parent;
  return MakeParents(root_fd, path);
}

Status RemoveDirectory(int parent_fd, const std::string& name) {
  UniqueFd dir(::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return FsError(errno, "open directory");
  FAAS_RETURN_IF_ERROR(RemoveTreeContents(dir.get()));
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0) return FsError(errno, "rmdir");
  return Ok();
}

// Removes whatever is at `name` so that a new node can be created there; an existing
// directory is kept when `keep_directory`. Returns whether a directory was kept.
Result<bool> ClearWayFor(int parent_fd, const std::string& name, bool keep_directory) {
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return FsError(errno, "stat");
  }
  if (S_ISDIR(st.st_mode)) {
    if (keep_directory) return true;
    FAAS_RETURN_IF_ERROR(RemoveDirectory(parent_fd, name));
    return false;
  }
  if (::unlinkat(parent_fd, name.c_str(), 0) != 0) return FsError(errno, "unlink");
  return false;
}

// Removes whatever is at `path` (nothing if its parent is missing): a whiteout, or
// the way cleared for a device node that is not created.
Status RemovePath(int root_fd, const std::vector<std::string>& path) {
  auto parent = OpenBeneath(root_fd, JoinPath(path, path.size() - 1));
  if (!parent.ok()) return IsMissing(parent.error()) ? Ok() : Status(std::move(parent).error());
  auto kept = ClearWayFor(parent->get(), path.back(), /*keep_directory=*/false);
  if (!kept.ok()) return std::move(kept).error();
  return Ok();
}

Status ClearOpaqueDirectory(int root_fd, const std::vector<std::string>& path) {
  std::string parent_path = path.empty() ? "" : JoinPath(path, path.size() - 1);
  std::string name = path.empty() ? "." : path.back();
  auto parent = OpenBeneath(root_fd, parent_path);
  if (!parent.ok()) return IsMissing(parent.error()) ? Ok() : Status(std::move(parent).error());
  UniqueFd dir(
      ::openat(parent->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return Ok();  // nothing below
    return FsError(errno, "open directory");
  }
  return RemoveTreeContents(dir.get());
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

Result<Metadata> MetadataOf(archive_entry* e) {
  int64_t uid = archive_entry_uid(e);
  int64_t gid = archive_entry_gid(e);
  if (uid < 0 || uid > kMaxId || gid < 0 || gid > kMaxId) return Bad("owner out of range");
  Metadata meta;
  meta.uid = static_cast<uid_t>(uid);
  meta.gid = static_cast<gid_t>(gid);
  meta.mode = archive_entry_mode(e) & 07777;
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

// ---------------------------------------------------------------------------
// Writing one entry of each kind.

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

// A plain file in a plain tar lies in the blob in one piece, right after its header:
// the kernel copies it (or shares the blocks, on filesystems with reflinks).
// False when this is not possible here; the caller then reads the data.
Result<bool> CopyInKernel(const LayerReader& reader, archive_entry* e, int fd, uint64_t size) {
  if (reader.plain_fd() < 0 || archive_entry_sparse_count(e) > 0) return false;
  auto offset = static_cast<off_t>(archive_filter_bytes(reader.tar(), 0));
  for (uint64_t left = size; left > 0;) {
    ssize_t n = ::copy_file_range(reader.plain_fd(), &offset, fd, nullptr, left, 0);
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

Status WriteFile(const LayerReader& reader, archive_entry* e, int parent_fd,
                 const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e));
  FAAS_RETURN_IF_ERROR(ClearWayFor(parent_fd, name, /*keep_directory=*/false));
  UniqueFd file(::openat(parent_fd, name.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file) return FsError(errno, "create");
  FAAS_ASSIGN_OR_RETURN(bool copied, CopyInKernel(reader, e, file.get(), DeclaredSize(e)));
  if (!copied) FAAS_RETURN_IF_ERROR(CopyData(reader, file.get(), DeclaredSize(e)));
  return SetMetadataFd(file.get(), meta);
}

// Entries created inside a directory later in the layer change its mtime, so its times
// are set again once the layer is complete (as docker does). Bounded: past the cap a
// directory keeps the times of its own entry, possibly bumped by later children.
constexpr size_t kMaxDeferredDirectories = 65536;

struct DeferredTimes {
  std::vector<std::string> path;
  struct timespec times[2];
};

Status WriteDirectory(archive_entry* e, const Entry& entry, int parent_fd,
                      std::vector<DeferredTimes>* deferred) {
  const std::string& name = entry.path.back();
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e));
  FAAS_ASSIGN_OR_RETURN(bool exists, ClearWayFor(parent_fd, name, /*keep_directory=*/true));
  if (!exists && ::mkdirat(parent_fd, name.c_str(), 0700) != 0) return FsError(errno, "mkdir");
  UniqueFd dir(::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return FsError(errno, "open directory");
  if (deferred->size() < kMaxDeferredDirectories) {
    deferred->push_back({entry.path, {meta.times[0], meta.times[1]}});
  }
  return SetMetadataFd(dir.get(), meta);
}

// A directory replaced later in the same layer is simply skipped.
Status RestoreDirectoryTimes(int root_fd, const std::vector<DeferredTimes>& deferred) {
  for (const DeferredTimes& d : deferred) {
    auto parent = OpenBeneath(root_fd, JoinPath(d.path, d.path.size() - 1));
    if (!parent.ok()) continue;
    UniqueFd dir(::openat(parent->get(), d.path.back().c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (dir && ::futimens(dir.get(), d.times) != 0) return FsError(errno, "set times");
  }
  return Ok();
}

Status WriteSymlink(archive_entry* e, const Entry& entry, int parent_fd, const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e));
  FAAS_RETURN_IF_ERROR(ClearWayFor(parent_fd, name, /*keep_directory=*/false));
  if (::symlinkat(entry.symlink_target.c_str(), parent_fd, name.c_str()) != 0) {
    return FsError(errno, "symlink");
  }
  return SetMetadataAt(parent_fd, name, meta, /*symlink=*/true);
}

Status WriteFifo(archive_entry* e, int parent_fd, const std::string& name) {
  FAAS_ASSIGN_OR_RETURN(Metadata meta, MetadataOf(e));
  FAAS_RETURN_IF_ERROR(ClearWayFor(parent_fd, name, /*keep_directory=*/false));
  if (::mknodat(parent_fd, name.c_str(), S_IFIFO | 0600, 0) != 0) return FsError(errno, "mkfifo");
  return SetMetadataAt(parent_fd, name, meta, /*symlink=*/false);
}

// The link shares the target's inode, hence its metadata: the header's is not applied.
Status WriteHardlink(int root_fd, const Entry& entry, int parent_fd, const std::string& name) {
  if (entry.link_path == entry.path) return Ok();  // a link to itself changes nothing
  auto target_dir = OpenBeneath(root_fd, JoinPath(entry.link_path, entry.link_path.size() - 1));
  if (!target_dir.ok()) return std::move(target_dir).error().Wrap("hardlink target");
  const std::string& target = entry.link_path.back();
  struct stat st;
  if (::fstatat(target_dir->get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Bad("hardlink target does not exist");
    return FsError(errno, "stat hardlink target");
  }
  if (S_ISDIR(st.st_mode)) return Bad("hardlink to a directory");
  FAAS_RETURN_IF_ERROR(ClearWayFor(parent_fd, name, /*keep_directory=*/false));
  if (::linkat(target_dir->get(), target.c_str(), parent_fd, name.c_str(), 0) != 0) {
    if (errno == ENOENT) return Bad("hardlink target does not exist");
    return FsError(errno, "link");
  }
  return Ok();
}

Status WriteEntry(const LayerReader& reader, archive_entry* e, const Entry& entry, int root_fd,
                  std::vector<DeferredTimes>* deferred) {
  switch (entry.kind) {
    case Kind::kSkip:
    case Kind::kWhiteout:
    case Kind::kOpaque:
      return Ok();  // whiteouts were done by the checking pass
    case Kind::kDevice:
      return RemovePath(root_fd, entry.path);
    default:
      break;
  }
  FAAS_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(root_fd, entry.path));
  const std::string& name = entry.path.back();
  switch (entry.kind) {
    case Kind::kFile:
      return WriteFile(reader, e, parent.get(), name);
    case Kind::kDirectory:
      return WriteDirectory(e, entry, parent.get(), deferred);
    case Kind::kSymlink:
      return WriteSymlink(e, entry, parent.get(), name);
    case Kind::kFifo:
      return WriteFifo(e, parent.get(), name);
    case Kind::kHardlink:
      return WriteHardlink(root_fd, entry, parent.get(), name);
    default:
      return Ok();
  }
}

// ---------------------------------------------------------------------------
// The two passes.

Status CheckEntry(archive_entry* e, const Entry& entry, int root_fd, const LayerLimits& limits,
                  LayerTotals* totals) {
  switch (entry.kind) {
    case Kind::kFile: {
      uint64_t size = DeclaredSize(e);
      if (size > limits.max_rootfs_bytes - totals->rootfs_bytes) {
        return MakeError(Errc::kTooLarge, "unpacked files exceed " +
                                              std::to_string(limits.max_rootfs_bytes) + " bytes");
      }
      totals->rootfs_bytes += size;
      return Ok();
    }
    case Kind::kWhiteout:
      return RemovePath(root_fd, entry.path);
    case Kind::kOpaque:
      return ClearOpaqueDirectory(root_fd, entry.path);
    case Kind::kDevice:
      if (totals->devices++ == 0) totals->first_device = "/" + JoinPath(entry.path);
      return Ok();
    default:
      return Ok();
  }
}

// A deep tree costs every walk over it (the rootfs is removed, shifted and scanned
// later) and its paths exceed PATH_MAX. The message shows only the path's start.
Status CheckDepth(const Entry& entry, const LayerLimits& limits) {
  const size_t depth = entry.path.size() + (entry.kind == Kind::kOpaque ? 1 : 0);
  if (depth <= limits.max_depth) return Ok();
  std::string start = JoinPath(entry.path, std::min<size_t>(entry.path.size(), 3));
  return Bad("path " + start + "/... is " + std::to_string(depth) + " levels deep; the limit is " +
             std::to_string(limits.max_depth));
}

Error WithEntry(Error error, const char* name) {
  return std::move(error).Wrap("entry " + Quote(name != nullptr ? name : ""));
}

// Returns the number of decompressed bytes, the budget of the writing pass.
Result<uint64_t> CheckPass(int blob_fd, int root_fd, const std::string& expected_diff_id,
                           const LayerLimits& limits, LayerTotals* totals, bool blob_is_diff_id) {
  Sha256 hash;
  LayerReader reader;
  uint64_t budget = limits.max_tar_bytes - std::min(limits.max_tar_bytes, totals->tar_bytes);
  if (blob_is_diff_id) {
    FAAS_RETURN_IF_ERROR(reader.OpenPlainTar(blob_fd, budget));
  } else {
    FAAS_RETURN_IF_ERROR(reader.Open(blob_fd, &hash, budget));
  }
  for (;;) {
    FAAS_ASSIGN_OR_RETURN(archive_entry * e, reader.Next());
    if (e == nullptr) break;
    const char* name = EntryName(e);
    if (++totals->files > limits.max_files) {
      return MakeError(Errc::kTooLarge,
                       "more than " + std::to_string(limits.max_files) + " entries in the image");
    }
    auto entry = Classify(e, name);
    if (!entry.ok()) return WithEntry(std::move(entry).error(), name);
    TrackDevices(&*entry, totals);
    FAAS_RETURN_IF_ERROR(CheckDepth(*entry, limits));
    Status status = CheckEntry(e, *entry, root_fd, limits, totals);
    if (!status.ok()) return WithEntry(std::move(status).error(), name);
  }
  FAAS_RETURN_IF_ERROR(reader.Drain());
  totals->tar_bytes += reader.bytes();
  if (blob_is_diff_id) return reader.bytes();
  std::string actual = "sha256:" + hash.FinalHex();
  if (!expected_diff_id.empty() && actual != expected_diff_id) {
    return Bad("digest mismatch: expected " + ShortDigest(expected_diff_id) + ", content has " +
               ShortDigest(actual));
  }
  return reader.bytes();
}

// `devices`: the device paths as they were before the layer.
Status WritePass(int blob_fd, int root_fd, uint64_t tar_bytes, bool blob_is_diff_id,
                 LayerTotals devices) {
  LayerReader reader;
  if (blob_is_diff_id) {
    FAAS_RETURN_IF_ERROR(reader.OpenPlainTar(blob_fd, tar_bytes));
  } else {
    FAAS_RETURN_IF_ERROR(reader.Open(blob_fd, nullptr, tar_bytes));
  }
  std::vector<DeferredTimes> deferred;
  for (;;) {
    FAAS_ASSIGN_OR_RETURN(archive_entry * e, reader.Next());
    if (e == nullptr) return RestoreDirectoryTimes(root_fd, deferred);
    const char* name = EntryName(e);
    auto entry = Classify(e, name);
    if (!entry.ok()) return WithEntry(std::move(entry).error(), name);
    TrackDevices(&*entry, &devices);
    Status status = WriteEntry(reader, e, *entry, root_fd, &deferred);
    if (!status.ok()) return WithEntry(std::move(status).error(), name);
  }
}

}  // namespace

Status ApplyLayer(int blob_fd, int rootfs_fd, const std::string& expected_diff_id,
                  const LayerLimits& limits, LayerTotals* totals, bool blob_is_diff_id) {
  LayerTotals before = *totals;
  FAAS_ASSIGN_OR_RETURN(uint64_t tar_bytes, CheckPass(blob_fd, rootfs_fd, expected_diff_id, limits,
                                                      totals, blob_is_diff_id));
  return WritePass(blob_fd, rootfs_fd, tar_bytes, blob_is_diff_id, std::move(before));
}

Result<UniqueFd> OpenDirBeneath(int root_fd, const std::string& relative) {
  return OpenBeneath(root_fd, relative);
}

}  // namespace faas::image
