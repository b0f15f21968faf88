#include "image/importer.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/file.h"
#include "common/io.h"
#include "common/text.h"
#include "image/archive_util.h"
#include "image/layer.h"
#include "image/manifest.h"

namespace faas::image {
namespace {

constexpr size_t kInputBufferSize = 128 * 1024;
constexpr size_t kSpoolBufferSize = 64 * 1024;
constexpr size_t kMaxJsonBytes = 16 << 20;
constexpr uint64_t kMaxArchiveMembers = 100000;
constexpr int kMaxLinkHops = 40;
// Decompressed tar bytes allowed per layer entry beyond file data: headers, pax
// records, padding. Bounds the work a decompression bomb can cause.
constexpr uint64_t kTarOverheadPerEntry = 4096;
constexpr uint64_t kTarOverheadFixed = 1 << 20;

Error Bad(const std::string& what) { return MakeError(Errc::kBadImage, what); }

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

uint64_t SaturatingMul(uint64_t a, uint64_t b) {
  return b != 0 && a > std::numeric_limits<uint64_t>::max() / b
             ? std::numeric_limits<uint64_t>::max()
             : a * b;
}

// ---------------------------------------------------------------------------
// The caller's fd, read by libarchive through ReadInput and counted there.

struct Input {
  int fd = -1;
  uint64_t bytes = 0;
  uint64_t max_bytes = 0;
  bool too_large = false;
  int read_errno = 0;
  std::unique_ptr<char[]> buffer = std::make_unique<char[]>(kInputBufferSize);
};

ssize_t ReadSome(Input* in) {
  for (;;) {
    ssize_t n = ::read(in->fd, in->buffer.get(), kInputBufferSize);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // A non-blocking fd from the caller: wait for data instead of failing.
      struct pollfd pfd = {in->fd, POLLIN, 0};
      if (::poll(&pfd, 1, -1) >= 0 || errno == EINTR) continue;
    }
    if (n < 0) {
      in->read_errno = errno;
      return -1;
    }
    in->bytes += static_cast<uint64_t>(n);
    if (in->bytes > in->max_bytes) {
      in->too_large = true;
      return -1;
    }
    return n;
  }
}

la_ssize_t ReadInput(archive* a, void* opaque, const void** out) {
  auto* in = static_cast<Input*>(opaque);
  ssize_t n = ReadSome(in);
  if (n < 0) {
    archive_set_error(a, in->too_large ? EFBIG : in->read_errno, "reading the image failed");
    return ARCHIVE_FATAL;
  }
  *out = in->buffer.get();
  return n;
}

Error TooLargeImage(uint64_t max_bytes) {
  return MakeError(Errc::kTooLarge,
                   "image archive larger than " + std::to_string(max_bytes) + " bytes");
}

Error InputError(const Input& in, archive* a) {
  if (in.too_large) return TooLargeImage(in.max_bytes);
  if (in.read_errno != 0) return SysError(in.read_errno, "read image");
  if (in.bytes == 0) return Bad("empty image: no bytes received (pipe in `podman save IMAGE`)");
  return Bad("not a valid image archive: " + Quote(ArchiveErrorText(a)));
}

// Reads past the archive's end so a pipe writer is not left blocked.
Status DrainInput(Input* in) {
  for (;;) {
    ssize_t n = ReadSome(in);
    if (n == 0) return Ok();
    if (n < 0) {
      if (in->too_large) return TooLargeImage(in->max_bytes);
      return SysError(in->read_errno, "read image");
    }
  }
}

// ---------------------------------------------------------------------------
// The outer archive, spooled: regular members become numbered files in the work
// directory; links are only remembered, and resolved within the archive's names.

struct Member {
  enum class Kind { kFile, kSymlink, kHardlink };
  Kind kind = Kind::kFile;
  uint64_t spool_id = 0;
  uint64_t size = 0;
  bool skipped = false;  // named by the digest of a layer the store has: not spooled
  // A layer blob, extracted as it streamed (not spooled) into this store directory,
  // with the digest of its tar; or why it could not be.
  std::string layer_dir;
  std::string diff_id;
  std::optional<Error> layer_error;
  std::string sha256;  // hex, for files
  std::string target;  // symlink text as stored, or the normalized hardlink target
};

std::string SpoolName(uint64_t id) { return "blob-" + std::to_string(id); }

void PushComponents(const std::string& path, std::vector<std::string>* pending) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  pending->insert(pending->end(), parts.rbegin(), parts.rend());
}

// The hex digest a member's name claims for its bytes (HEX.tar, blobs/sha256/HEX), or "".
std::string ClaimedDigest(std::string_view path) {
  constexpr std::string_view kBlobs = "blobs/sha256/";
  constexpr std::string_view kTar = ".tar";
  if (path.substr(0, kBlobs.size()) == kBlobs) path.remove_prefix(kBlobs.size());
  if (path.size() == 64 + kTar.size() && path.substr(64) == kTar) path.remove_suffix(kTar.size());
  return IsSha256Hex(path) ? std::string(path) : std::string();
}

// Whether a member's first bytes are those of a layer blob: a tar, gzip or zstd.
bool LooksLikeLayer(const char* data, size_t size) {
  constexpr std::string_view kGzip("\x1f\x8b", 2);
  constexpr std::string_view kZstd("\x28\xb5\x2f\xfd", 4);
  constexpr std::string_view kUstar("ustar", 5);
  constexpr size_t kMagicOffset = 257;
  std::string_view start(data, size);
  return start.substr(0, kGzip.size()) == kGzip || start.substr(0, kZstd.size()) == kZstd ||
         (size >= 512 && start.substr(kMagicOffset, kUstar.size()) == kUstar);
}

// What a member that is a layer gives the importer: a directory extracted already, or
// a blob to extract.
struct LayerSource {
  std::string extracted;  // a layer directory in the store, not added yet
  UniqueFd blob;
  std::string sha256;  // hex of the blob's bytes
};

class SpooledArchive {
 public:
  struct Options {
    int work_fd = -1;
    uint64_t max_bytes = 0;
    // Whether a member named by a digest need not be read (optional).
    std::function<bool(const std::string& hex)> known;
    // Where members that look like layers are extracted as they stream; none: spooled.
    LayerStore* store = nullptr;
    LayerLimits limits;
  };
  explicit SpooledArchive(Options options) : options_(std::move(options)) {}
  SpooledArchive(const SpooledArchive&) = delete;
  SpooledArchive& operator=(const SpooledArchive&) = delete;
  // Layers extracted but not added to the store go (those added were moved away).
  ~SpooledArchive() {
    for (const std::string& dir : extracted_) (void)RemoveTree(dir);
  }

  // Reads every member of `outer`, once. `in` explains read failures.
  Status Spool(archive* outer, const Input& in);
  bool Contains(const std::string& path) const { return members_.count(path) > 0; }
  // The regular file `ref.path` leads to, checked against ref.digest and ref.size;
  // `sha256` (optional) receives the hex digest of its bytes.
  Result<UniqueFd> Open(const BlobRef& ref, std::string* sha256 = nullptr) const;
  // The layer `ref.path` leads to, checked against ref.digest and ref.size and its tar
  // against `diff_id`.
  Result<LayerSource> Layer(const BlobRef& ref, const std::string& diff_id) const;
  // Likewise, its content (a JSON document, size-capped).
  Result<std::string> ReadJson(const BlobRef& ref, std::string* sha256 = nullptr) const;

 private:
  struct Resolved {
    const Member* member;
    std::string path;
  };
  Status AddMember(archive* outer, archive_entry* e, const Input& in);
  Status ReadMember(archive* outer, const Input& in, Member* member);
  // The member's next bytes into buffer_, counted and hashed: their count, 0 at its end.
  Result<size_t> ReadChunk(archive* outer, const Input& in, Member* member, Sha256* hash);
  Status SpoolMember(archive* outer, const Input& in, Member* member, Sha256* hash, size_t first);
  Status ExtractMember(archive* outer, const Input& in, Member* member, Sha256* hash, size_t first);
  Result<Resolved> Resolve(const std::string& path) const;
  Result<const Member*> Verify(const BlobRef& ref) const;

  Options options_;
  LayerTotals totals_;                  // of the members extracted, bounded by options_.limits
  std::vector<std::string> extracted_;  // every layer directory made
  uint64_t spooled_bytes_ = 0;
  uint64_t next_id_ = 0;
  std::unordered_map<std::string, Member> members_;
  std::unique_ptr<char[]> buffer_ = std::make_unique<char[]>(kSpoolBufferSize);
};

Status SpooledArchive::Spool(archive* outer, const Input& in) {
  for (uint64_t count = 0;; ++count) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(outer, &e);
    if (r == ARCHIVE_EOF) return Ok();
    if (r < ARCHIVE_WARN) return InputError(in, outer);
    if (count >= kMaxArchiveMembers) {
      return MakeError(Errc::kTooLarge, "image archive has more than " +
                                            std::to_string(kMaxArchiveMembers) + " members");
    }
    FAAS_RETURN_IF_ERROR(AddMember(outer, e, in));
  }
}

Status SpooledArchive::AddMember(archive* outer, archive_entry* e, const Input& in) {
  const char* name = archive_entry_pathname(e);
  if (name == nullptr) name = archive_entry_pathname_utf8(e);
  const char* hardlink = archive_entry_hardlink(e);
  if (hardlink == nullptr) hardlink = archive_entry_hardlink_utf8(e);
  auto type = archive_entry_filetype(e);
  // Directories and special files name nothing we read; their data, if any, is skipped.
  if (hardlink == nullptr && type != AE_IFREG && type != AE_IFLNK) return Ok();
  if (name == nullptr) return Bad("archive member without a name");
  auto path = NormalizeArchivePath(name);
  if (!path.ok()) return std::move(path).error().Wrap("archive member " + Quote(name));
  Member member;
  if (hardlink != nullptr) {
    auto target = NormalizeArchivePath(hardlink);
    if (!target.ok()) return std::move(target).error().Wrap("archive hardlink " + Quote(name));
    member.kind = Member::Kind::kHardlink;
    member.target = std::move(target).value();
  } else if (type == AE_IFLNK) {
    const char* target = archive_entry_symlink(e);
    if (target == nullptr) target = archive_entry_symlink_utf8(e);
    if (target == nullptr || *target == '\0') {
      return Bad("archive member " + Quote(name) + ": empty symlink");
    }
    member.kind = Member::Kind::kSymlink;
    member.target = target;
  } else if (std::string claimed = ClaimedDigest(*path);
             !claimed.empty() && options_.known && options_.known(claimed)) {
    member.skipped = true;
    member.sha256 = std::move(claimed);
    if (archive_read_data_skip(outer) < ARCHIVE_WARN) return InputError(in, outer);
  } else {
    FAAS_RETURN_IF_ERROR(ReadMember(outer, in, &member));
  }
  members_[path.value()] = std::move(member);
  return Ok();
}

Result<size_t> SpooledArchive::ReadChunk(archive* outer, const Input& in, Member* member,
                                         Sha256* hash) {
  // archive_read_data fills the holes of sparse members with zeros.
  la_ssize_t n = archive_read_data(outer, buffer_.get(), kSpoolBufferSize);
  if (n < 0) return InputError(in, outer);
  spooled_bytes_ += static_cast<uint64_t>(n);
  if (spooled_bytes_ > options_.max_bytes) {
    return MakeError(Errc::kTooLarge, "decompressed image archive larger than " +
                                          std::to_string(options_.max_bytes) + " bytes");
  }
  hash->Update(buffer_.get(), static_cast<size_t>(n));
  member->size += static_cast<uint64_t>(n);
  return static_cast<size_t>(n);
}

Status SpooledArchive::ReadMember(archive* outer, const Input& in, Member* member) {
  Sha256 hash;
  FAAS_ASSIGN_OR_RETURN(size_t first, ReadChunk(outer, in, member, &hash));
  if (options_.store != nullptr && LooksLikeLayer(buffer_.get(), first)) {
    FAAS_RETURN_IF_ERROR(ExtractMember(outer, in, member, &hash, first));
  } else {
    FAAS_RETURN_IF_ERROR(SpoolMember(outer, in, member, &hash, first));
  }
  member->sha256 = hash.FinalHex();
  if (!member->layer_dir.empty() && member->diff_id.empty()) {
    member->diff_id = "sha256:" + member->sha256;  // not compressed: the blob is the tar
  }
  return Ok();
}

Status SpooledArchive::SpoolMember(archive* outer, const Input& in, Member* member, Sha256* hash,
                                   size_t first) {
  member->spool_id = next_id_++;
  std::string name = SpoolName(member->spool_id);
  UniqueFd fd(::openat(options_.work_fd, name.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "create spool file " + name);
  for (size_t n = first; n > 0;) {
    FAAS_RETURN_IF_ERROR_CTX(WriteAll(fd.get(), std::string_view(buffer_.get(), n)),
                             "spool " + name);
    FAAS_ASSIGN_OR_RETURN(n, ReadChunk(outer, in, member, hash));
  }
  return Ok();
}

// The layer is written once, into the store, as it arrives: nothing is spooled. Which
// layer it is, if any, is known only once the manifest and config have come, often last.
Status SpooledArchive::ExtractMember(archive* outer, const Input& in, Member* member, Sha256* hash,
                                     size_t first) {
  FAAS_ASSIGN_OR_RETURN(member->layer_dir, options_.store->NewLayerDir());
  extracted_.push_back(member->layer_dir);
  UniqueFd dir(::open(member->layer_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return SysError(errno, "open " + member->layer_dir);
  size_t pending = first;
  Status outer_status;
  LayerStreamReader read = [&](const void** data) -> long {
    if (pending == 0) {
      auto n = ReadChunk(outer, in, member, hash);
      if (!n.ok()) {
        outer_status = std::move(n).error();
        return -1;
      }
      pending = *n;
    }
    *data = buffer_.get();
    return static_cast<long>(std::exchange(pending, 0));
  };
  auto diff_id = ExtractLayerFrom(read, dir.get(), options_.limits, &totals_);
  FAAS_RETURN_IF_ERROR(outer_status);  // the archive itself is broken
  if (diff_id.ok()) {
    member->diff_id = std::move(diff_id).value();
    return Ok();
  }
  // The limits bound the work of the whole import and our own I/O failing ends it; a
  // bad layer only matters if the member turns out to be one of the image's layers.
  if (diff_id.error().code != Errc::kBadImage) return std::move(diff_id).error();
  member->layer_error = std::move(diff_id).error();
  (void)RemoveTree(member->layer_dir);
  member->layer_dir.clear();
  for (size_t n = pending; n > 0;) {
    FAAS_ASSIGN_OR_RETURN(n, ReadChunk(outer, in, member, hash));
  }
  return Ok();
}

// Follows symlinks (relative to their directory) and hardlinks (relative to the top)
// component by component, never above the archive's top.
Result<SpooledArchive::Resolved> SpooledArchive::Resolve(const std::string& path) const {
  std::vector<std::string> pending;
  PushComponents(path, &pending);
  std::vector<std::string> done;
  int hops = 0;
  while (!pending.empty()) {
    std::string part = std::move(pending.back());
    pending.pop_back();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (done.empty()) return Bad("link leads out of the archive");
      done.pop_back();
      continue;
    }
    done.push_back(std::move(part));
    auto it = members_.find(JoinPath(done));
    if (it == members_.end() || it->second.kind == Member::Kind::kFile) continue;
    if (++hops > kMaxLinkHops) return Bad("too many levels of links");
    done.pop_back();
    const std::string& target = it->second.target;
    if (it->second.kind == Member::Kind::kHardlink) {
      done.clear();
    } else if (target.front() == '/') {
      return Bad("symlink leads out of the archive");
    }
    PushComponents(target, &pending);
  }
  std::string resolved = JoinPath(done);
  auto it = members_.find(resolved);
  if (it == members_.end() || it->second.kind != Member::Kind::kFile) {
    return Bad("not found in the archive");
  }
  return Resolved{&it->second, resolved};
}

Result<const Member*> SpooledArchive::Verify(const BlobRef& ref) const {
  auto resolved = Resolve(ref.path);
  if (!resolved.ok()) return std::move(resolved).error().Wrap(Quote(ref.path));
  std::string expected = ref.digest;
  constexpr std::string_view kBlobs = "blobs/sha256/";
  std::string_view final_path = resolved->path;
  if (expected.empty() && final_path.substr(0, kBlobs.size()) == kBlobs &&
      IsSha256Hex(final_path.substr(kBlobs.size()))) {
    expected = "sha256:" + std::string(final_path.substr(kBlobs.size()));
  }
  const Member* member = resolved->member;
  std::string actual = "sha256:" + member->sha256;
  if (!expected.empty() && expected != actual) {
    return Bad(Quote(ref.path) + ": digest mismatch: expected " + ShortDigest(expected) +
               ", content has " + ShortDigest(actual));
  }
  if (ref.size >= 0 && !member->skipped && static_cast<uint64_t>(ref.size) != member->size) {
    return Bad(Quote(ref.path) + ": size mismatch: expected " + std::to_string(ref.size) +
               ", content has " + std::to_string(member->size));
  }
  return member;
}

Result<UniqueFd> SpooledArchive::Open(const BlobRef& ref, std::string* sha256) const {
  FAAS_ASSIGN_OR_RETURN(const Member* member, Verify(ref));
  if (sha256 != nullptr) *sha256 = member->sha256;
  if (member->skipped) return Bad(Quote(ref.path) + ": not a layer the image's config lists");
  std::string name = SpoolName(member->spool_id);
  UniqueFd fd(::openat(options_.work_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError(errno, "open spool file " + name);
  return fd;
}

Result<std::string> SpooledArchive::ReadJson(const BlobRef& ref, std::string* sha256) const {
  FAAS_ASSIGN_OR_RETURN(const Member* member, Verify(ref));
  if (sha256 != nullptr) *sha256 = member->sha256;
  if (member->skipped || !member->layer_dir.empty() || member->layer_error) {
    return Bad(Quote(ref.path) + ": a layer, not a JSON document");
  }
  if (member->size > kMaxJsonBytes) {
    return Bad(Quote(ref.path) + ": JSON document larger than " + std::to_string(kMaxJsonBytes) +
               " bytes");
  }
  return ReadFileAt(options_.work_fd, SpoolName(member->spool_id), kMaxJsonBytes);
}

Result<LayerSource> SpooledArchive::Layer(const BlobRef& ref, const std::string& diff_id) const {
  FAAS_ASSIGN_OR_RETURN(const Member* member, Verify(ref));
  if (member->layer_error) return *member->layer_error;
  LayerSource source;
  if (member->layer_dir.empty()) {
    FAAS_ASSIGN_OR_RETURN(source.blob, Open(ref, &source.sha256));
    return source;
  }
  if (member->diff_id != diff_id) {
    return Bad("digest mismatch: expected " + ShortDigest(diff_id) + ", content has " +
               ShortDigest(member->diff_id));
  }
  source.extracted = member->layer_dir;
  return source;
}

// ---------------------------------------------------------------------------
// The import, step by step.

Result<UniqueFd> OpenDirectory(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return SysError(errno, "open " + path);
  return fd;
}

Status SpoolInput(SpooledArchive* spool, Input* in) {
  ArchiveReader outer = NewTarReader(/*allow_empty=*/false);
  if (!outer) return MakeError(Errc::kInternal, "libarchive: out of memory");
  if (archive_read_open(outer.get(), in, nullptr, ReadInput, nullptr) != ARCHIVE_OK) {
    return InputError(*in, outer.get());
  }
  FAAS_RETURN_IF_ERROR(spool->Spool(outer.get(), *in));
  return DrainInput(in);
}

Result<ImageManifest> LoadManifest(const SpooledArchive& spool) {
  if (spool.Contains("manifest.json")) {
    FAAS_ASSIGN_OR_RETURN(std::string text, spool.ReadJson(BlobRef{"manifest.json", "", -1}));
    return ParseDockerManifest(text);
  }
  if (spool.Contains("index.json")) {
    FAAS_ASSIGN_OR_RETURN(std::string text, spool.ReadJson(BlobRef{"index.json", "", -1}));
    return ParseOciLayout(text, [&spool](const BlobRef& ref) { return spool.ReadJson(ref); });
  }
  return Bad("no manifest.json or index.json in archive");
}

Result<ParsedConfig> LoadConfig(const SpooledArchive& spool, const ImageManifest& manifest) {
  std::string sha256;
  auto text = spool.ReadJson(manifest.config, &sha256);
  if (!text.ok()) return std::move(text).error().Wrap("image config");
  FAAS_ASSIGN_OR_RETURN(ParsedConfig config, ParseImageConfig(*text));
  config.config.digest = "sha256:" + sha256;
  if (config.diff_ids.size() != manifest.layers.size()) {
    return Bad("image config lists " + std::to_string(config.diff_ids.size()) +
               " rootfs.diff_ids for " + std::to_string(manifest.layers.size()) + " layers");
  }
  return config;
}

LayerLimits LayerLimitsFor(const ImportLimits& limits) {
  LayerLimits out;
  out.max_files = limits.max_files;
  out.max_rootfs_bytes = limits.max_rootfs_bytes;
  out.max_depth = limits.max_depth;
  out.ids = limits.ids;
  out.max_tar_bytes = SaturatingAdd(
      SaturatingAdd(limits.max_rootfs_bytes, SaturatingMul(limits.max_files, kTarOverheadPerEntry)),
      kTarOverheadFixed);
  return out;
}

std::string LayerLabel(size_t index, const std::string& digest) {
  return "layer " + std::to_string(index + 1) + " (" + ShortDigest(digest) + ")";
}

// The layers of one image, in order, into one tree through a store: each is taken from
// the store or extracted into it, then merged. Keeps `stats` up to date.
class LayerApplier {
 public:
  LayerApplier(LayerStore* store, int rootfs_fd, ino_t holder, const ImportLimits& limits,
               ImportStats* stats)
      : store_(store),
        rootfs_fd_(rootfs_fd),
        holder_(holder),
        limits_(LayerLimitsFor(limits)),
        stats_(stats) {}

  // Layer `index` (from 0) with `diff_id`; `source` gives it when the store lacks it.
  Status Apply(size_t index, const std::string& label, const std::string& diff_id,
               const std::function<Result<LayerSource>()>& source) {
    Status applied = ApplyOne(diff_id, source);
    stats_->files = totals_.files;
    stats_->rootfs_bytes = totals_.rootfs_bytes;
    stats_->skipped_devices = totals_.devices + merge_.linked_devices;
    stats_->first_skipped_device =
        totals_.devices != 0 ? totals_.first_device : merge_.first_linked_device;
    if (!applied.ok()) return std::move(applied).error().Wrap(label);
    stats_->layers = index + 1;
    return Ok();
  }

 private:
  Status ApplyOne(const std::string& diff_id, const std::function<Result<LayerSource>()>& provide) {
    FAAS_ASSIGN_OR_RETURN(std::string key, LayerStore::Key(diff_id, limits_.ids));
    FAAS_ASSIGN_OR_RETURN(bool stored, store_->Use(key, holder_));
    if (!stored) {
      FAAS_ASSIGN_OR_RETURN(LayerSource source, provide());
      if (source.extracted.empty()) {
        FAAS_RETURN_IF_ERROR(Extract(source, diff_id, key));
      } else {
        FAAS_RETURN_IF_ERROR(store_->Add(source.extracted, key, holder_));
      }
    }
    FAAS_RETURN_IF_ERROR(CountStored(key));
    UniqueFd layer(::open(store_->Path(key).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!layer) return SysError(errno, "open " + store_->Path(key));
    return MergeLayer(layer.get(), rootfs_fd_, limits_, &merge_);
  }

  Status Extract(const LayerSource& blob, const std::string& diff_id, const std::string& key) {
    FAAS_ASSIGN_OR_RETURN(std::string dir, store_->NewLayerDir());
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    // Its counts are taken from the stored layer, as for any other.
    LayerTotals totals = totals_;
    Status extracted = !dir_fd ? Status(SysError(errno, "open " + dir))
                               : ExtractLayer(blob.blob.get(), dir_fd.get(), diff_id, limits_,
                                              &totals, "sha256:" + blob.sha256 == diff_id);
    if (extracted.ok()) extracted = store_->Add(dir, key, holder_);
    if (!extracted.ok()) (void)RemoveTree(dir);
    return extracted;
  }

  // A stored layer counts against the limits as it did when it was extracted.
  Status CountStored(const std::string& key) {
    UniqueFd layer(::open(store_->Path(key).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!layer) return SysError(errno, "open " + store_->Path(key));
    FAAS_ASSIGN_OR_RETURN(LayerTotals counts, ReadLayerCounts(layer.get()));
    totals_.files = SaturatingAdd(totals_.files, counts.files);
    totals_.rootfs_bytes = SaturatingAdd(totals_.rootfs_bytes, counts.rootfs_bytes);
    totals_.tar_bytes = SaturatingAdd(totals_.tar_bytes, counts.tar_bytes);
    if (counts.devices != 0 && totals_.devices == 0) totals_.first_device = counts.first_device;
    totals_.devices += counts.devices;
    if (totals_.files > limits_.max_files) {
      return MakeError(Errc::kTooLarge,
                       "more than " + std::to_string(limits_.max_files) + " entries in the image");
    }
    if (totals_.rootfs_bytes > limits_.max_rootfs_bytes) {
      return MakeError(Errc::kTooLarge, "unpacked files exceed " +
                                            std::to_string(limits_.max_rootfs_bytes) + " bytes");
    }
    if (totals_.tar_bytes > limits_.max_tar_bytes) {
      return MakeError(Errc::kTooLarge, "decompressed layers exceed the size limit");
    }
    return Ok();
  }

  LayerStore* store_;
  int rootfs_fd_;
  ino_t holder_;
  LayerLimits limits_;
  ImportStats* stats_;
  LayerTotals totals_;
  MergeState merge_;
};

// The store to use: the caller's, or a private one in `work_dir`.
Result<LayerStore*> StoreFor(LayerStore* store, const std::string& work_dir,
                             std::unique_ptr<LayerStore>* own) {
  if (store != nullptr) return store;
  *own = std::make_unique<LayerStore>(work_dir + "/layers");
  FAAS_RETURN_IF_ERROR((*own)->Open());
  return own->get();
}

Status ApplyLayers(const SpooledArchive& spool, const ImageManifest& manifest,
                   const ParsedConfig& config, LayerApplier* applier) {
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const BlobRef& layer = manifest.layers[i];
    const std::string& diff_id = config.diff_ids[i];
    std::string label = LayerLabel(i, layer.digest.empty() ? diff_id : layer.digest);
    FAAS_RETURN_IF_ERROR(
        applier->Apply(i, label, diff_id, [&] { return spool.Layer(layer, diff_id); }));
  }
  return Ok();
}

Result<ImageConfig> Import(int input_fd, const std::string& work_dir, const std::string& rootfs_dir,
                           const ImportLimits& limits, ImportStats* stats, LayerStore* store) {
  FAAS_ASSIGN_OR_RETURN(UniqueFd work, OpenDirectory(work_dir));
  FAAS_ASSIGN_OR_RETURN(UniqueFd rootfs, OpenDirectory(rootfs_dir));
  FAAS_ASSIGN_OR_RETURN(ino_t holder, LayerStore::HolderOf(rootfs_dir));
  std::unique_ptr<LayerStore> own;
  FAAS_ASSIGN_OR_RETURN(store, StoreFor(store, work_dir, &own));
  auto input = std::make_unique<Input>();
  input->fd = input_fd;
  input->max_bytes = limits.max_image_bytes;
  // Layers the store has are referenced for this tree as their members go by, so that
  // they stay until the tree has them; those the image turns out not to use are let go.
  std::set<std::string> pinned;
  auto known = [&](const std::string& hex) {
    auto key = LayerStore::Key("sha256:" + hex, limits.ids);
    auto used = key.ok() ? store->Use(*key, holder) : Result<bool>(false);
    if (!used.ok() || !*used) return false;
    pinned.insert(*key);
    return true;
  };
  // The spool holds decompressed members: bounded too, or a small compressed upload
  // could fill the disk.
  SpooledArchive spool({.work_fd = work.get(),
                        .max_bytes = limits.max_image_bytes,
                        .known = known,
                        .store = store,
                        .limits = LayerLimitsFor(limits)});
  Status spooled = SpoolInput(&spool, input.get());
  stats->input_bytes = input->bytes;
  Result<ImageConfig> result = MakeError(Errc::kInternal, "import did not run");
  if (!spooled.ok()) {
    result = std::move(spooled).error();
  } else if (auto manifest = LoadManifest(spool); !manifest.ok()) {
    result = std::move(manifest).error();
  } else if (auto config = LoadConfig(spool, *manifest); !config.ok()) {
    result = std::move(config).error();
  } else {
    LayerApplier applier(store, rootfs.get(), holder, limits, stats);
    Status applied = ApplyLayers(spool, *manifest, *config, &applier);
    if (applied.ok()) {
      result = std::move(config->config);
      for (const std::string& diff_id : config->diff_ids) {
        if (auto key = LayerStore::Key(diff_id, limits.ids); key.ok()) pinned.erase(*key);
      }
    } else {
      result = std::move(applied).error();
    }
  }
  for (const std::string& key : pinned) store->Release(key, holder);
  return result;
}

}  // namespace

Result<ImageConfig> ImportImage(int input_fd, const std::string& work_dir,
                                const std::string& rootfs_dir, const ImportLimits& limits,
                                ImportStats* stats, LayerStore* store) {
  ImportStats local;
  Result<ImageConfig> result = MakeError(Errc::kInternal, "import did not run");
  // The module edge: nothing may escape to the daemon's worker thread.
  try {
    result = Import(input_fd, work_dir, rootfs_dir, limits, &local, store);
  } catch (const std::bad_alloc&) {
    result = MakeError(Errc::kInternal, "import image: out of memory");
  } catch (const std::exception& e) {
    result = MakeError(Errc::kInternal, std::string("import image: ") + e.what());
  }
  if (stats != nullptr) *stats = local;
  return result;
}

Status ApplyLayerBlobs(const std::vector<LayerBlob>& blobs,
                       const std::vector<std::string>& diff_ids, const std::string& rootfs_dir,
                       const ImportLimits& limits, ImportStats* stats, LayerStore* store,
                       const std::string& work_dir) {
  if (diff_ids.size() != blobs.size()) {
    return Bad("image config lists " + std::to_string(diff_ids.size()) + " rootfs.diff_ids for " +
               std::to_string(blobs.size()) + " layers");
  }
  FAAS_ASSIGN_OR_RETURN(UniqueFd rootfs, OpenDirectory(rootfs_dir));
  FAAS_ASSIGN_OR_RETURN(ino_t holder, LayerStore::HolderOf(rootfs_dir));
  std::unique_ptr<LayerStore> own;
  FAAS_ASSIGN_OR_RETURN(store, StoreFor(store, work_dir, &own));
  LayerApplier applier(store, rootfs.get(), holder, limits, stats);
  for (size_t i = 0; i < blobs.size(); ++i) {
    const LayerBlob& blob = blobs[i];
    auto open = [&]() -> Result<LayerSource> {
      if (blob.path.empty()) return MakeError(Errc::kInternal, "the stored layer went away");
      LayerSource source;
      source.blob = UniqueFd(::open(blob.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      source.sha256 = blob.sha256;
      if (!source.blob) return SysError(errno, "open " + blob.path);
      return source;
    };
    FAAS_RETURN_IF_ERROR(
        applier.Apply(i, LayerLabel(i, "sha256:" + blob.sha256), diff_ids[i], open));
  }
  return Ok();
}

std::string SkippedSummary(const ImportStats& stats) {
  if (stats.skipped_devices == 0) return "";
  return "skipped " + std::to_string(stats.skipped_devices) + " device node(s), the first " +
         EscapeControl(stats.first_skipped_device) +
         ": containers get their devices from the runtime";
}

}  // namespace faas::image
