#include "runtime/runtime.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "common/file.h"

namespace faas::runtime {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr auto kVersionTimeout = std::chrono::seconds(5);
constexpr size_t kMaxListOutput = 16 << 20;

bool IsFs(const std::string& path, long magic) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && static_cast<long>(st.f_type) == magic;
}

// Errors name no path: the caller's context does.
Error NotExecutable(int err) {
  Error error = MakeError(Errc::kInvalidArgument, std::strerror(err));
  error.sys_errno = err;
  return error;
}

Status CheckExecutable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NotExecutable(errno);
  if (!S_ISREG(st.st_mode)) return MakeError(Errc::kInvalidArgument, "not a file");
  if (::access(path.c_str(), X_OK) != 0) return NotExecutable(errno);
  return Ok();
}

Result<std::string> ResolveProgram(const std::string& program) {
  if (program.empty()) return MakeError(Errc::kInvalidArgument, "no program given");
  if (program.find('/') != std::string::npos) {
    FAAS_RETURN_IF_ERROR(CheckExecutable(program));
    return program;
  }
  const char* env = std::getenv("PATH");
  std::istringstream dirs(env ? env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (CheckExecutable(candidate).ok()) return candidate;
  }
  return MakeError(Errc::kInvalidArgument, "not found in PATH");
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// Runs `PROGRAM --version`, the proof that the runtime runs at all, and names it:
// "runc" or "crun" from the first line ("crun version 1.8.1"), else the file name.
// Fails when it cannot start, exits non-zero or does not answer in time.
Result<std::string> IdentifyRuntime(const std::string& path) {
  const auto deadline = Clock::now() + kVersionTimeout;
  FAAS_ASSIGN_OR_RETURN(Captured version, Capture({path, "--version"}, 4096, deadline, true));
  // Its output ends before it exits, or it closed stdout and lingers: wait for the
  // exit until the same deadline.
  Result<int> status = version.child.TryReap();
  while (status.ok() && *status < 0 && Clock::now() < deadline) {
    ::usleep(2000);
    status = version.child.TryReap();
  }
  if (!status.ok()) return std::move(status).error();
  if (*status < 0)
    return MakeError(Errc::kInvalidArgument, "`--version` did not answer within " +
                                                 std::to_string(kVersionTimeout.count()) + " s");
  if (*status != 0) {
    std::string said = FirstLine(version.out);
    return MakeError(Errc::kInvalidArgument, "`--version` failed (" + DescribeWaitStatus(*status) +
                                                 ")" + (said.empty() ? "" : ": " + said));
  }
  std::istringstream first_line(FirstLine(version.out));
  std::string word, second;
  first_line >> word >> second;
  if (second == "version" && (word == "runc" || word == "crun")) return word;
  return fs::path(path).filename().string();
}

// crun 1.8 refuses a hybrid layout (v1 hierarchies plus cgroup2 at `unified`) as
// soon as any controller is enabled on the cgroup2 side.
Status CheckCrunCgroups(const std::string& cgroup_fs) {
  if (IsFs(cgroup_fs, CGROUP2_SUPER_MAGIC)) return Ok();
  const std::string unified = cgroup_fs + "/unified";
  if (!IsFs(unified, CGROUP2_SUPER_MAGIC)) return Ok();
  auto controllers = ReadFile(unified + "/cgroup.controllers", 4096);
  if (!controllers.ok()) return std::move(controllers).error().Wrap("crun: cgroup check");
  std::string names = *controllers;
  std::replace(names.begin(), names.end(), '\n', ' ');
  while (!names.empty() && names.back() == ' ') names.pop_back();
  if (names.empty()) return Ok();
  return MakeError(Errc::kInvalidArgument,
                   "crun cannot run containers on this host: its cgroups are in hybrid mode "
                   "with controllers on cgroup v2 (" +
                       names +
                       "); boot with cgroup v2 only (systemd.unified_cgroup_hierarchy=1) or use "
                       "--runtime runc");
}

// Whether `controller` has a hierarchy: listed by the cgroup2 root (v2), else a v1
// hierarchy mounted at CGROUP_FS/NAME (or a symlink to one, e.g. cpu -> cpu,cpuacct).
bool HasController(const std::string& cgroup_fs, const std::string& v2_controllers,
                   const std::string& controller) {
  if (IsFs(cgroup_fs, CGROUP2_SUPER_MAGIC)) {
    std::istringstream names(v2_controllers);
    for (std::string name; names >> name;)
      if (name == controller) return true;
    return false;
  }
  return IsFs(cgroup_fs + "/" + controller, CGROUP_SUPER_MAGIC);
}

// The mount point of every cgroup hierarchy: `cgroup_fs` itself on a v2 host, else
// each v1 hierarchy below it and the cgroup2 one of a hybrid host. Symlinks such as
// cpu -> cpu,cpuacct name a hierarchy twice and are skipped.
std::vector<std::string> CgroupHierarchies(const std::string& cgroup_fs) {
  if (IsFs(cgroup_fs, CGROUP2_SUPER_MAGIC)) return {cgroup_fs};
  std::vector<std::string> hierarchies;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cgroup_fs, ec)) {
    const std::string path = entry.path().string();
    if (entry.is_symlink(ec) || !entry.is_directory(ec)) continue;
    if (IsFs(path, CGROUP_SUPER_MAGIC) || IsFs(path, CGROUP2_SUPER_MAGIC))
      hierarchies.push_back(path);
  }
  return hierarchies;
}

// Depth first: a cgroup with sub-cgroups cannot be removed. Kills what is in a
// cgroup that is still busy. True when `dir` is gone.
bool RemoveCgroupTree(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_symlink(ec) && entry.is_directory(ec))
      (void)RemoveCgroupTree(entry.path().string());
  }
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT || errno == ENOTDIR) return true;
  if (auto procs = ReadFile(dir + "/cgroup.procs", 1 << 20); procs.ok()) {
    std::istringstream pids(*procs);
    for (pid_t pid; pids >> pid;) ::kill(pid, SIGKILL);
  }
  return false;
}

bool IsUnder(std::string_view path, std::string_view cgroup) {
  return path == cgroup || (path.size() > cgroup.size() &&
                            path.substr(0, cgroup.size()) == cgroup && path[cgroup.size()] == '/');
}

class OciRuntime final : public Runtime {
 public:
  OciRuntime(std::string path, std::string name, RuntimeConfig config,
             std::vector<std::string> hierarchies)
      : path_(std::move(path)),
        name_(std::move(name)),
        config_(std::move(config)),
        hierarchies_(std::move(hierarchies)) {}

  const std::string& name() const override { return name_; }

  std::string CgroupsPath(const std::string& id) const override {
    return config_.cgroup_parent + "/" + id;
  }

  Result<Child> Run(const std::string& id, const std::string& bundle_dir, int stdout_fd,
                    int stderr_fd) override {
    return Spawn({Command({"run", "--bundle", bundle_dir, id}), -1, stdout_fd, stderr_fd});
  }

  bool HasState(const std::string& id) const override {
    struct stat st {};
    return ::lstat((config_.root + "/" + id).c_str(), &st) == 0;
  }

  Result<Child> Delete(const std::string& id) override {
    return Spawn({Command({"delete", "--force", id})});
  }

  Result<std::vector<std::string>> List() override;
  bool RemoveCgroups(const std::string& id) override;
  Status CheckMember(const std::string& id, pid_t pid) const override;

 private:
  std::vector<std::string> Command(std::initializer_list<std::string> args) const {
    std::vector<std::string> argv = {path_, "--root", config_.root};
    argv.insert(argv.end(), args);
    return argv;
  }

  std::string path_;
  std::string name_;
  RuntimeConfig config_;
  std::vector<std::string> hierarchies_;
};

// Both runtimes keep one directory per container under root. `list` skips one whose
// state file is not written yet (the run was killed while creating it), which
// `delete --force` still removes: such directories are listed too.
Result<std::vector<std::string>> OciRuntime::List() {
  FAAS_ASSIGN_OR_RETURN(Captured listed,
                        Capture(Command({"list", "--quiet"}), kMaxListOutput, std::nullopt,
                                /*with_stderr=*/false));
  if (listed.out.size() >= kMaxListOutput)
    return MakeError(Errc::kTooLarge, path_ + " list: more than " + std::to_string(kMaxListOutput) +
                                          " bytes of output");
  FAAS_ASSIGN_OR_RETURN(int status, listed.child.Wait());
  if (status != 0)
    return MakeError(Errc::kInternal, path_ + " list: " + DescribeWaitStatus(status));
  std::set<std::string> ids;
  std::istringstream lines(listed.out);
  for (std::string id; std::getline(lines, id);) ids.insert(id);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(config_.root, ec)) {
    if (!entry.is_symlink(ec) && entry.is_directory(ec))
      ids.insert(entry.path().filename().string());
  }
  if (ec) return SysError(ec.value(), "list " + config_.root);
  std::erase_if(ids, [](const std::string& id) { return id.empty() || id[0] == '.'; });
  return std::vector<std::string>(ids.begin(), ids.end());
}

// `delete --force` leaves the cgroups when the run was killed while the runtime was
// still creating the container (the cgroup exists, its state file not yet), and
// the runtime's init may still be in them, dying.
bool OciRuntime::RemoveCgroups(const std::string& id) {
  bool all_gone = true;
  for (const auto& hierarchy : hierarchies_)
    all_gone &= RemoveCgroupTree(hierarchy + CgroupsPath(id));
  return all_gone;
}

Status OciRuntime::CheckMember(const std::string& id, pid_t pid) const {
  const std::string who = "pid " + std::to_string(pid);
  auto cgroups = ReadFile("/proc/" + std::to_string(pid) + "/cgroup", 64 << 10);
  if (!cgroups.ok()) {
    if (cgroups.error().sys_errno == ENOENT || cgroups.error().sys_errno == ESRCH)
      return MakeError(Errc::kInvalidArgument, who + " is gone");
    return std::move(cgroups).error();
  }
  const std::string mine = CgroupsPath(id);
  std::istringstream lines(*cgroups);
  for (std::string line; std::getline(lines, line);) {
    // hierarchy-id:controllers:path
    auto colon = line.find(':', line.find(':') + 1);
    if (colon != std::string::npos && IsUnder(std::string_view(line).substr(colon + 1), mine))
      return Ok();
  }
  return MakeError(Errc::kInvalidArgument, who + " is not in the container's cgroup " + mine);
}

}  // namespace

Status CheckCgroupControllers(const std::string& cgroup_fs) {
  std::string v2_controllers;
  if (IsFs(cgroup_fs, CGROUP2_SUPER_MAGIC)) {
    auto read = ReadFile(cgroup_fs + "/cgroup.controllers", 4096);
    if (!read.ok()) return std::move(read).error().Wrap("cgroup check");
    v2_controllers = std::move(read).value();
  }
  std::string missing;
  for (const char* controller : kCgroupControllers) {
    if (HasController(cgroup_fs, v2_controllers, controller)) continue;
    missing += (missing.empty() ? "" : ", ") + std::string(controller);
  }
  if (missing.empty()) return Ok();
  return MakeError(Errc::kInvalidArgument,
                   "the cgroup controller(s) " + missing + " are not available under " + cgroup_fs +
                       ": containers' limits need memory, cpu and pids (cgroup v2: listed in " +
                       cgroup_fs + "/cgroup.controllers; v1: each mounted as " + cgroup_fs +
                       "/NAME)");
}

Result<std::unique_ptr<Runtime>> OpenOciRuntime(RuntimeConfig config) {
  const std::string context = "OCI runtime " + config.program;
  if (config.root.empty()) return MakeError(Errc::kInvalidArgument, context + ": no state dir");
  auto path = ResolveProgram(config.program);
  if (!path.ok()) return std::move(path).error().Wrap(context);
  auto identified = IdentifyRuntime(*path);
  if (!identified.ok()) return std::move(identified).error().Wrap(context + " does not run");
  std::string name = std::move(identified).value();
  if (name == "crun") FAAS_RETURN_IF_ERROR(CheckCrunCgroups(config.cgroup_fs));
  FAAS_RETURN_IF_ERROR_CTX(MakeDirs(config.root, 0700), context);
  auto hierarchies = CgroupHierarchies(config.cgroup_fs);
  return std::unique_ptr<Runtime>(std::make_unique<OciRuntime>(
      std::move(path).value(), std::move(name), std::move(config), std::move(hierarchies)));
}

}  // namespace faas::runtime
