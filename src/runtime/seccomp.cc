#include "runtime/seccomp.h"

#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace faas::runtime {
namespace {

// What ordinary programs (libc, Go, Python, Node) use to compute, do file and
// socket I/O on what they were given, and manage their own threads and children.
// Left out on purpose: mount and namespace calls, kernel modules, bpf, perf,
// ptrace, keyrings, io_uring, clock/time setting, reboot, swap, and the like.
constexpr const char* kAllowed[] = {
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "kill",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lseek",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_setaffinity",
    "sched_yield",
    "select",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
};

constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;

// Address families a handler may open: local sockets and IP (its client is TCP). Others
// reach kernel code that no handler needs (AF_VSOCK to the hypervisor, AF_PACKET,
// AF_NETLINK, AF_ALG, AF_BLUETOOTH, ...). glibc copes without netlink: getaddrinfo's
// address-family probe falls back to assuming both IPv4 and IPv6.
constexpr uint64_t kSocketFamilies[] = {AF_UNIX, AF_INET, AF_INET6};
constexpr uint64_t kSocketpairFamilies[] = {AF_UNIX};
constexpr uint64_t kMaxFamily = AF_INET6;

nlohmann::json FamilyRule(const char* call, uint64_t family, const char* op,
                          nlohmann::json action) {
  nlohmann::json rule = std::move(action);
  rule["names"] = nlohmann::json::array({call});
  rule["args"] = nlohmann::json::array(
      {nlohmann::json{{"index", 0}, {"value", family}, {"valueTwo", 0}, {"op", op}}});
  return rule;
}

// The comparisons of one rule are ANDed, so a set of families takes a rule each: ALLOW
// for each allowed family, EAFNOSUPPORT (what Docker's profile answers) for each other
// value up to the largest allowed family and for everything above it. The domain is an int, so a
// negative one is a huge unsigned value and lands in the last rule.
void AddFamilyRules(const char* call, const uint64_t* allowed, size_t count,
                    nlohmann::json* rules) {
  const nlohmann::json allow = {{"action", "SCMP_ACT_ALLOW"}};
  const nlohmann::json refuse = {{"action", "SCMP_ACT_ERRNO"}, {"errnoRet", EAFNOSUPPORT}};
  for (uint64_t family = 0; family <= kMaxFamily; ++family) {
    const bool ok = std::find(allowed, allowed + count, family) != allowed + count;
    rules->push_back(FamilyRule(call, family, "SCMP_CMP_EQ", ok ? allow : refuse));
  }
  rules->push_back(FamilyRule(call, kMaxFamily + 1, "SCMP_CMP_GE", refuse));
}

nlohmann::json Build() {
  nlohmann::json names = nlohmann::json::array();
  for (const char* name : kAllowed) names.push_back(name);
  nlohmann::json rules = nlohmann::json::array();
  AddFamilyRules("socket", kSocketFamilies, std::size(kSocketFamilies), &rules);
  AddFamilyRules("socketpair", kSocketpairFamilies, std::size(kSocketpairFamilies), &rules);
  nlohmann::json profile = {
      {"defaultAction", "SCMP_ACT_ERRNO"},
      {"defaultErrnoRet", 1},  // EPERM, which programs expect for "not allowed here"
      // Not SCMP_ARCH_X86: i386 code opens sockets through socketcall(2), whose arguments
      // sit in memory, so libseccomp cannot check the family there (it refuses the
      // family rules below for that architecture). 32-bit x86 handlers do not run.
      {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X32"}},
      {"syscalls",
       {
           {{"names", names}, {"action", "SCMP_ACT_ALLOW"}},
           // Threads and processes, but no new namespaces (unshare is not allowed either).
           {{"names", nlohmann::json::array({"clone"})},
            {"action", "SCMP_ACT_ALLOW"},
            {"args",
             {{{"index", 0},
               {"value", kNamespaceFlags},
               {"valueTwo", 0},
               {"op", "SCMP_CMP_MASKED_EQ"}}}}},
           // clone3 passes its flags in memory, out of seccomp's sight: ENOSYS makes
           // libc fall back to clone.
           {{"names", nlohmann::json::array({"clone3"})},
            {"action", "SCMP_ACT_ERRNO"},
            {"errnoRet", ENOSYS}},
       }},
  };
  for (nlohmann::json& rule : rules) profile["syscalls"].push_back(std::move(rule));
  return profile;
}

}  // namespace

const nlohmann::json& SeccompProfile() {
  static const nlohmann::json profile = Build();
  return profile;
}

}  // namespace faas::runtime
