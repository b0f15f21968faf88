#include "image/user.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <optional>
#include <sstream>
#include <vector>

#include "common/fd.h"
#include "common/io.h"

namespace faas::image {
namespace {

constexpr size_t kMaxDbBytes = 4 << 20;

std::optional<uint32_t> ParseId(const std::string& text) {
  uint32_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

// Reads etc/passwd or etc/group of the rootfs; symlinks resolve inside it.
// A missing file reads as empty.
Result<std::string> ReadDb(int rootfd, const char* path) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, rootfd, path, &how, sizeof how)));
  if (!fd) {
    if (errno == ENOENT) return std::string();
    return SysError(errno, std::string("open /") + path, Errc::kBadImage);
  }
  auto text = ReadAll(fd.get(), kMaxDbBytes);
  if (text.ok()) return text;
  Error error = std::move(text).error();
  error.code = Errc::kBadImage;  // the file came with the image: a failure is the image's
  return std::move(error).Wrap(std::string("/") + path);
}

// Finds the line whose first field is `key` and returns its fields.
std::optional<std::vector<std::string>> FindEntry(const std::string& db, const std::string& key,
                                                  size_t key_field) {
  std::istringstream lines(db);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> fields;
    std::istringstream parts(line);
    for (std::string f; std::getline(parts, f, ':');) fields.push_back(f);
    if (fields.size() > key_field && fields[key_field] == key) return fields;
  }
  return std::nullopt;
}

}  // namespace

Result<UserIds> ResolveUser(const std::string& rootfs_dir, const std::string& user) {
  if (user.empty()) return UserIds{};
  UniqueFd rootfd(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return SysError(errno, "open " + rootfs_dir);
  auto colon = user.find(':');
  std::string user_part = user.substr(0, colon);
  std::optional<std::string> group_part;
  if (colon != std::string::npos) group_part = user.substr(colon + 1);

  UserIds ids;
  FAAS_ASSIGN_OR_RETURN(std::string passwd, ReadDb(rootfd.get(), "etc/passwd"));
  std::optional<uint32_t> numeric = ParseId(user_part);
  auto entry = FindEntry(passwd, user_part, numeric ? 2 : 0);
  if (numeric) {
    ids.uid = *numeric;
  } else if (entry && entry->size() > 3 && ParseId((*entry)[2])) {
    ids.uid = *ParseId((*entry)[2]);
  } else {
    return MakeError(Errc::kBadImage,
                     "the image's user '" + user_part + "' is not in its /etc/passwd");
  }
  if (entry && entry->size() > 3 && ParseId((*entry)[3])) ids.gid = *ParseId((*entry)[3]);
  if (!group_part) return ids;

  if (auto gid = ParseId(*group_part)) {
    ids.gid = *gid;
    return ids;
  }
  FAAS_ASSIGN_OR_RETURN(std::string groups, ReadDb(rootfd.get(), "etc/group"));
  auto group = FindEntry(groups, *group_part, 0);
  if (!group || group->size() < 3 || !ParseId((*group)[2]))
    return MakeError(Errc::kBadImage,
                     "the image's group '" + *group_part + "' is not in its /etc/group");
  ids.gid = *ParseId((*group)[2]);
  return ids;
}

}  // namespace faas::image

namespace faas::image {
namespace {

bool IsExecutableIn(int rootfd, const std::string& path) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  std::string relative = path.substr(path.find_first_not_of('/'));
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, rootfd, relative.c_str(), &how, sizeof how)));
  struct stat st;
  return fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

}  // namespace

Status CheckCommand(const std::string& rootfs_dir, const std::vector<std::string>& cmd,
                    const std::vector<std::string>& env) {
  if (cmd.empty() || cmd[0].empty())
    return MakeError(Errc::kBadImage, "the image has an empty command");
  UniqueFd rootfd(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return SysError(errno, "open " + rootfs_dir);
  const std::string& program = cmd[0];
  if (program.find('/') != std::string::npos) {
    if (program[0] == '/' && IsExecutableIn(rootfd.get(), program)) return Ok();
    return MakeError(Errc::kBadImage,
                     "the image's command " + program + " is not an executable file in the image");
  }
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& kv : env)
    if (kv.rfind("PATH=", 0) == 0) path = kv.substr(5);
  std::istringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && dir[0] == '/' && IsExecutableIn(rootfd.get(), dir + "/" + program))
      return Ok();
  }
  return MakeError(Errc::kBadImage,
                   "the image's command " + program + " is not found in its PATH (" + path + ")");
}

}  // namespace faas::image
