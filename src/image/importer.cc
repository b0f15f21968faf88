#include "image/importer.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <limits>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/fd.h"
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

class SpooledArchive {
 public:
  SpooledArchive(int work_fd, uint64_t max_bytes) : work_fd_(work_fd), max_bytes_(max_bytes) {}

  // Reads every member of `outer`, once. `in` explains read failures.
  Status Spool(archive* outer, const Input& in);
  bool Contains(const std::string& path) const { return members_.count(path) > 0; }
  // The regular file `ref.path` leads to, checked against ref.digest and ref.size;
  // `sha256` (optional) receives the hex digest of its bytes.
  Result<UniqueFd> Open(const BlobRef& ref, std::string* sha256 = nullptr) const;
  // Likewise, its content (a JSON document, size-capped).
  Result<std::string> ReadJson(const BlobRef& ref, std::string* sha256 = nullptr) const;

 private:
  struct Resolved {
    const Member* member;
    std::string path;
  };
  Status AddMember(archive* outer, archive_entry* e, const Input& in);
  Status SpoolFile(archive* outer, const Input& in, Member* member);
  Result<Resolved> Resolve(const std::string& path) const;
  Result<const Member*> Verify(const BlobRef& ref) const;

  int work_fd_;
  uint64_t max_bytes_;
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
  } else {
    FAAS_RETURN_IF_ERROR(SpoolFile(outer, in, &member));
  }
  members_[path.value()] = std::move(member);
  return Ok();
}

Status SpooledArchive::SpoolFile(archive* outer, const Input& in, Member* member) {
  member->spool_id = next_id_++;
  std::string name = SpoolName(member->spool_id);
  UniqueFd fd(
      ::openat(work_fd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "create spool file " + name);
  Sha256 hash;
  for (;;) {
    // archive_read_data fills the holes of sparse members with zeros.
    la_ssize_t n = archive_read_data(outer, buffer_.get(), kSpoolBufferSize);
    if (n == 0) break;
    if (n < 0) return InputError(in, outer);
    spooled_bytes_ += static_cast<uint64_t>(n);
    if (spooled_bytes_ > max_bytes_) {
      return MakeError(Errc::kTooLarge, "decompressed image archive larger than " +
                                            std::to_string(max_bytes_) + " bytes");
    }
    hash.Update(buffer_.get(), static_cast<size_t>(n));
    FAAS_RETURN_IF_ERROR_CTX(
        WriteAll(fd.get(), std::string_view(buffer_.get(), static_cast<size_t>(n))),
        "spool " + name);
    member->size += static_cast<uint64_t>(n);
  }
  member->sha256 = hash.FinalHex();
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
  if (ref.size >= 0 && static_cast<uint64_t>(ref.size) != member->size) {
    return Bad(Quote(ref.path) + ": size mismatch: expected " + std::to_string(ref.size) +
               ", content has " + std::to_string(member->size));
  }
  return member;
}

Result<UniqueFd> SpooledArchive::Open(const BlobRef& ref, std::string* sha256) const {
  FAAS_ASSIGN_OR_RETURN(const Member* member, Verify(ref));
  if (sha256 != nullptr) *sha256 = member->sha256;
  std::string name = SpoolName(member->spool_id);
  UniqueFd fd(::openat(work_fd_, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError(errno, "open spool file " + name);
  return fd;
}

Result<std::string> SpooledArchive::ReadJson(const BlobRef& ref, std::string* sha256) const {
  FAAS_ASSIGN_OR_RETURN(const Member* member, Verify(ref));
  if (sha256 != nullptr) *sha256 = member->sha256;
  if (member->size > kMaxJsonBytes) {
    return Bad(Quote(ref.path) + ": JSON document larger than " + std::to_string(kMaxJsonBytes) +
               " bytes");
  }
  return ReadFileAt(work_fd_, SpoolName(member->spool_id), kMaxJsonBytes);
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
  out.max_tar_bytes = SaturatingAdd(
      SaturatingAdd(limits.max_rootfs_bytes, SaturatingMul(limits.max_files, kTarOverheadPerEntry)),
      kTarOverheadFixed);
  return out;
}

// Applies layer `index` (from 0) held in `blob_fd`, whose own bytes hash to
// `blob_sha256` (hex), and keeps `stats` up to date.
Status ApplyOne(int blob_fd, const std::string& blob_sha256, const std::string& label,
                const std::string& diff_id, int rootfs_fd, const LayerLimits& layer_limits,
                LayerTotals* totals, size_t index, ImportStats* stats) {
  // An uncompressed layer (docker-archive's usual) was hashed already.
  const bool blob_is_diff_id = "sha256:" + blob_sha256 == diff_id;
  Status applied = ApplyLayer(blob_fd, rootfs_fd, diff_id, layer_limits, totals, blob_is_diff_id);
  stats->files = totals->files;
  stats->rootfs_bytes = totals->rootfs_bytes;
  stats->skipped_devices = totals->devices;
  stats->first_skipped_device = totals->first_device;
  if (!applied.ok()) return std::move(applied).error().Wrap(label);
  stats->layers = index + 1;
  return Ok();
}

std::string LayerLabel(size_t index, const std::string& digest) {
  return "layer " + std::to_string(index + 1) + " (" + ShortDigest(digest) + ")";
}

Status ApplyLayers(const SpooledArchive& spool, const ImageManifest& manifest,
                   const ParsedConfig& config, int rootfs_fd, const ImportLimits& limits,
                   ImportStats* stats) {
  LayerLimits layer_limits = LayerLimitsFor(limits);
  LayerTotals totals;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const BlobRef& layer = manifest.layers[i];
    const std::string& diff_id = config.diff_ids[i];
    std::string label = LayerLabel(i, layer.digest.empty() ? diff_id : layer.digest);
    std::string blob_sha256;
    auto blob = spool.Open(layer, &blob_sha256);
    if (!blob.ok()) return std::move(blob).error().Wrap(label);
    FAAS_RETURN_IF_ERROR(ApplyOne(blob->get(), blob_sha256, label, diff_id, rootfs_fd, layer_limits,
                                  &totals, i, stats));
  }
  return Ok();
}

Result<ImageConfig> Import(int input_fd, const std::string& work_dir, const std::string& rootfs_dir,
                           const ImportLimits& limits, ImportStats* stats) {
  FAAS_ASSIGN_OR_RETURN(UniqueFd work, OpenDirectory(work_dir));
  FAAS_ASSIGN_OR_RETURN(UniqueFd rootfs, OpenDirectory(rootfs_dir));
  auto input = std::make_unique<Input>();
  input->fd = input_fd;
  input->max_bytes = limits.max_image_bytes;
  // The spool holds decompressed members: bounded too, or a small compressed upload
  // could fill the disk.
  SpooledArchive spool(work.get(), limits.max_image_bytes);
  Status spooled = SpoolInput(&spool, input.get());
  stats->input_bytes = input->bytes;
  FAAS_RETURN_IF_ERROR(spooled);
  FAAS_ASSIGN_OR_RETURN(ImageManifest manifest, LoadManifest(spool));
  FAAS_ASSIGN_OR_RETURN(ParsedConfig config, LoadConfig(spool, manifest));
  FAAS_RETURN_IF_ERROR(ApplyLayers(spool, manifest, config, rootfs.get(), limits, stats));
  return std::move(config.config);
}

}  // namespace

Result<ImageConfig> ImportImage(int input_fd, const std::string& work_dir,
                                const std::string& rootfs_dir, const ImportLimits& limits,
                                ImportStats* stats) {
  ImportStats local;
  Result<ImageConfig> result = MakeError(Errc::kInternal, "import did not run");
  // The module edge: nothing may escape to the daemon's worker thread.
  try {
    result = Import(input_fd, work_dir, rootfs_dir, limits, &local);
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
                       const ImportLimits& limits, ImportStats* stats) {
  if (diff_ids.size() != blobs.size()) {
    return Bad("image config lists " + std::to_string(diff_ids.size()) + " rootfs.diff_ids for " +
               std::to_string(blobs.size()) + " layers");
  }
  FAAS_ASSIGN_OR_RETURN(UniqueFd rootfs, OpenDirectory(rootfs_dir));
  LayerLimits layer_limits = LayerLimitsFor(limits);
  LayerTotals totals;
  for (size_t i = 0; i < blobs.size(); ++i) {
    const std::string label = LayerLabel(i, "sha256:" + blobs[i].sha256);
    UniqueFd blob(::open(blobs[i].path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!blob) return SysError(errno, "open " + blobs[i].path).Wrap(label);
    FAAS_RETURN_IF_ERROR(ApplyOne(blob.get(), blobs[i].sha256, label, diff_ids[i], rootfs.get(),
                                  layer_limits, &totals, i, stats));
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
