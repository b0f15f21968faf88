#include "runtime/bundle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/fd.h"
#include "common/io.h"
#include "runtime/seccomp.h"

namespace faas::runtime {
namespace {

constexpr char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

nlohmann::json Mount(const std::string& dest, const std::string& type, const std::string& source,
                     std::vector<std::string> options) {
  return {
      {"destination", dest}, {"type", type}, {"source", source}, {"options", std::move(options)}};
}

nlohmann::json Mounts(const ContainerSpec& spec) {
  return nlohmann::json::array({
      Mount("/proc", "proc", "proc", {}),
      Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      Mount("/dev/pts", "devpts", "devpts",
            {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}),
      Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
      Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
      Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
      Mount("/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777", "size=65536k"}),
      Mount(kControlSocketInContainer, "bind", spec.control_socket,
            {"bind", "nosuid", "nodev", "noexec"}),
  });
}

nlohmann::json Environment(const ContainerSpec& spec) {
  std::vector<std::string> env;
  bool has_path = false;
  for (const auto& kv : spec.env) has_path |= kv.rfind("PATH=", 0) == 0;
  if (!has_path) env.push_back(kDefaultPath);
  env.insert(env.end(), spec.env.begin(), spec.env.end());
  env.push_back(std::string("FAAS_CONTROL_SOCKET=") + kControlSocketInContainer);
  env.push_back("FAAS_TIMEOUT_MS=" + std::to_string(spec.run_timeout_ms));
  env.push_back("FAAS_REUSE=" + std::to_string(spec.reuse));
  return env;
}

nlohmann::json Linux(const ContainerSpec& spec) {
  nlohmann::json linux_section = {
      {"resources",
       {{"memory", {{"limit", spec.memory_bytes}, {"swap", spec.memory_bytes}}},
        {"cpu", {{"quota", spec.cpu_quota_us}, {"period", 100000}}},
        {"pids", {{"limit", spec.pids_limit}}},
        {"devices", {{{"allow", false}, {"access", "rwm"}}}}}},
      {"namespaces",
       {{{"type", "pid"}},
        {{"type", "network"}},
        {{"type", "ipc"}},
        {{"type", "uts"}},
        {{"type", "mount"}},
        {{"type", "cgroup"}}}},
      {"maskedPaths",
       {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
        "/proc/scsi"}},
      {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
  };
  if (!spec.cgroups_path.empty()) linux_section["cgroupsPath"] = spec.cgroups_path;
  if (spec.userns_base != 0) {
    nlohmann::json mapping = {
        {{"containerID", 0}, {"hostID", spec.userns_base}, {"size", kUsernsSize}}};
    linux_section["namespaces"].push_back({{"type", "user"}});
    linux_section["uidMappings"] = mapping;
    linux_section["gidMappings"] = mapping;
  }
  linux_section["seccomp"] = SeccompProfile();
  return linux_section;
}

Status EnsureDir(int rootfd, const char* name, uid_t owner) {
  if (::mkdirat(rootfd, name, 0755) != 0) {
    if (errno == EEXIST) return Ok();
    return SysError(errno, std::string("mkdir /") + name);
  }
  if (owner != 0 && ::fchownat(rootfd, name, owner, owner, AT_SYMLINK_NOFOLLOW) != 0)
    return SysError(errno, std::string("chown /") + name);
  return Ok();
}

}  // namespace

nlohmann::json MakeOciConfig(const ContainerSpec& spec) {
  nlohmann::json no_caps = nlohmann::json::array();
  return {
      {"ociVersion", "1.0.2"},
      {"process",
       {{"terminal", false},
        {"user", {{"uid", spec.uid}, {"gid", spec.gid}}},
        {"args", spec.args},
        {"env", Environment(spec)},
        {"cwd", spec.cwd.empty() ? "/" : spec.cwd},
        {"capabilities",
         {{"bounding", no_caps},
          {"effective", no_caps},
          {"permitted", no_caps},
          {"inheritable", no_caps},
          {"ambient", no_caps}}},
        {"rlimits",
         {{{"type", "RLIMIT_NOFILE"}, {"hard", spec.nofile_limit}, {"soft", spec.nofile_limit}}}},
        {"noNewPrivileges", true}}},
      {"root", {{"path", spec.rootfs}, {"readonly", true}}},
      {"hostname", spec.hostname},
      {"mounts", Mounts(spec)},
      {"linux", Linux(spec)},
  };
}

Status WriteBundle(const std::string& dir, const ContainerSpec& spec) {
  std::string path = dir + "/config.json";
  std::string text = MakeOciConfig(spec).dump();
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "create " + path);
  if (auto st = WriteAll(fd.get(), text); !st.ok()) return std::move(st).error().Wrap(path);
  return Ok();
}

Status PrepareRootfs(const std::string& rootfs, uid_t owner) {
  UniqueFd rootfd(::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return SysError(errno, "open " + rootfs);
  for (const char* dir : {"proc", "dev", "sys", "tmp"})
    FAAS_RETURN_IF_ERROR(EnsureDir(rootfd.get(), dir, owner));
  const char* sock = kControlSocketInContainer + 1;
  struct stat st;
  if (::fstatat(rootfd.get(), sock, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISREG(st.st_mode)) return Ok();
    return MakeError(Errc::kBadImage,
                     "the image has /control.sock, which faasd needs for its own socket");
  }
  UniqueFd fd(
      ::openat(rootfd.get(), sock, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return SysError(errno, "create /control.sock");
  if (owner != 0 && ::fchown(fd.get(), owner, owner) != 0)
    return SysError(errno, "chown /control.sock");
  return Ok();
}

}  // namespace faas::runtime
