// The OCI runtime (runc, crun) behind one seam: starting, deleting and listing
// containers, and the cgroup work around a container that the runtime leaves to us.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/process.h"

namespace faas::runtime {

struct RuntimeConfig {
  std::string program = "runc";  // a name looked up in PATH, or a path
  std::string root;              // the runtime's state dir (--root); created if missing
  std::string cgroup_parent = "/faasd";
  // Where the cgroup filesystems are mounted: one cgroup2 mount (v2), or a tmpfs
  // holding one mount per v1 hierarchy and maybe a cgroup2 one at `unified` (hybrid).
  std::string cgroup_fs = "/sys/fs/cgroup";
};

// One implementation per OCI runtime; tests may add fakes. Not thread-safe: use one
// Runtime from one thread (faasd's event loop). Every method that starts a process
// returns it as a Child, which kills and reaps it if dropped early.
class Runtime {
 public:
  virtual ~Runtime() = default;

  // "runc", "crun", or the program's file name for another runtime: for logs.
  virtual const std::string& name() const = 0;
  // The cgroup path to give the container (ContainerSpec::cgroups_path), relative to
  // each hierarchy's root: CGROUP_PARENT/ID.
  virtual std::string CgroupsPath(const std::string& id) const = 0;

  // Starts `run` in the foreground: the child exits when the container does. The
  // runtime's and the container's stdout go to `stdout_fd`, their stderr to
  // `stderr_fd` (both borrowed; -1: inherit). No shell; every other fd is closed in
  // the child.
  virtual Result<Child> Run(const std::string& id, const std::string& bundle_dir, int stdout_fd,
                            int stderr_fd) = 0;
  // True while the runtime keeps state for `id` (a state dir under root, even a
  // half-written one): then Delete is needed.
  virtual bool HasState(const std::string& id) const = 0;
  // Starts `delete --force`: kills what is left of the container and removes its
  // state and (usually) its cgroups.
  virtual Result<Child> Delete(const std::string& id) = 0;
  // Every container with state under root: what `list` reports plus state dirs it
  // skips (a run killed before its state file was written). Blocks until `list`
  // exits: for start-up only. Fails when `list` fails.
  virtual Result<std::vector<std::string>> List() = 0;

  // After a killed run: SIGKILLs what is left in the container's cgroups (every v1
  // hierarchy and v2, sub-cgroups first) and removes them. False while one is still
  // busy (its processes are dying): call again later. No cgroup at all is success.
  virtual bool RemoveCgroups(const std::string& id) = 0;
  // Ok when process `pid` is in container `id`'s cgroup (or one below it);
  // kInvalidArgument for a stranger (in another cgroup, or gone); another code when
  // the check itself failed.
  virtual Status CheckMember(const std::string& id, pid_t pid) const = 0;
};

// Opens runc, crun, or any program with runc's command line, telling crun from the
// rest by its `--version` output. Creates config.root (mode 0700) if missing.
// Fails with one error, kInvalidArgument, when the program is missing or not an
// executable file, when its `--version` fails or does not answer within 5 s (it
// does not run here), or when it is crun and this host's cgroups are hybrid with
// controllers on cgroup v2, where crun refuses to run containers.
Result<std::unique_ptr<Runtime>> OpenOciRuntime(RuntimeConfig config);

// The cgroup controllers a container's limits use (see bundle.cc).
inline constexpr const char* kCgroupControllers[] = {"memory", "cpu", "pids"};
// Ok when every one of kCgroupControllers is available under `cgroup_fs`: listed
// in its cgroup.controllers on a cgroup v2 host, else mounted as a v1 hierarchy at
// CGROUP_FS/NAME. Otherwise one kInvalidArgument error naming the missing ones.
Status CheckCgroupControllers(const std::string& cgroup_fs);

}  // namespace faas::runtime
