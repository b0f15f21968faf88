/* seccomp-probe: takes the client and makes system calls that faasd's seccomp
 * allowlist (or the missing capabilities) must refuse, then answers one
 * "call=ERRNO-NAME" line per attempt ("ok" when the call succeeded).
 *
 *   GET /        unshare, mount, umount, ptrace, setns, chroot, pivot_root, bpf,
 *                keyrings, io_uring, perf, modules, clock and time setting, reboot
 *   GET /socket  socket() for each address family a handler may use (unix, inet, inet6)
 *                and for some it may not (vsock, packet, netlink, bluetooth, alg, a
 *                negative one), and socketpair() for unix and inet
 *   GET /clone   clone() and clone3() asking for new namespaces (a user namespace
 *                first: it needs no capability, only the kernel and the filter stop it),
 *                and whether a child in a new user+network namespace can then use
 *                CAP_NET_ADMIN there (bring its lo up)
 */
#include "faas_handler.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static char body[4096];
static size_t used;

static void report(const char *call, long rc) {
  const char *what = "ok";
  if (rc < 0) {
    what = strerrorname_np(errno);
    if (!what) what = "?";
  }
  used += (size_t)snprintf(body + used, sizeof body - used, "%s=%s\n", call, what);
}

/* A raw clone that behaves like fork: the child exits at once. */
static long clone_ns(unsigned long flags) {
  long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) syscall(SYS_exit_group, 0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  return pid;
}

static long clone3_ns(unsigned long long flags) {
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = flags;
  args.exit_signal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) syscall(SYS_exit_group, 0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  return pid;
}

static void basic_probes(void) {
  report("unshare_mount", syscall(SYS_unshare, CLONE_NEWNS));
  report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
  report("unshare_net", syscall(SYS_unshare, CLONE_NEWNET));
  report("mount_tmpfs", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0UL, NULL));
  report("remount_root_rw", syscall(SYS_mount, "none", "/", NULL, (unsigned long)(0x20 /*MS_REMOUNT*/), NULL));
  report("umount_tmp", syscall(SYS_umount2, "/tmp", 2 /*MNT_DETACH*/));
  report("ptrace_traceme", syscall(SYS_ptrace, 0 /*PTRACE_TRACEME*/, 0, 0, 0));
  report("ptrace_attach_1", syscall(SYS_ptrace, 16 /*PTRACE_ATTACH*/, 1, 0, 0));
  int nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  report("setns", syscall(SYS_setns, nsfd, 0));
  if (nsfd >= 0) close(nsfd);
  report("chroot", syscall(SYS_chroot, "/tmp"));
  report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  report("bpf", syscall(SYS_bpf, 0, NULL, 0));
  report("add_key", syscall(SYS_add_key, "user", "faas", "x", 1, -2 /*KEY_SPEC_PROCESS_KEYRING*/));
  report("keyctl", syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -2, 0));
  char params[120] = {0};
  report("io_uring_setup", syscall(SYS_io_uring_setup, 4, params));
  char attr[128] = {0};
  report("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
  report("init_module", syscall(SYS_init_module, NULL, 0, ""));
  struct timespec ts = {0, 0};
  report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &ts));
  report("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
  report("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321FEDC /*POWER_OFF*/, NULL));
  report("swapon", syscall(SYS_swapon, "/tmp/swap", 0));
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
}

/* The fd is closed at once: only whether the call succeeded matters. */
static long open_close(int fd) {
  if (fd >= 0) close(fd);
  return fd;
}

static long pair(int family) {
  int fds[2];
  long rc = socketpair(family, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
  if (rc == 0) {
    close(fds[0]);
    close(fds[1]);
  }
  return rc;
}

static void socket_probes(void) {
  report("socket_unix", open_close(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  report("socket_inet", open_close(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  report("socket_inet6", open_close(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)));
  report("socket_vsock", open_close(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  report("socket_packet", open_close(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0)));
  report("socket_netlink",
         open_close(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0 /*NETLINK_ROUTE*/)));
  report("socket_bluetooth", open_close(socket(AF_BLUETOOTH, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  report("socket_alg", open_close(socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)));
  report("socket_negative", open_close((int)syscall(SYS_socket, -1, SOCK_STREAM, 0)));
  report("socketpair_unix", pair(AF_UNIX));
  report("socketpair_inet", pair(AF_INET));
}

/* What a process gets in namespaces of its own: CLONE_NEWUSER | CLONE_NEWNET, then
 * bring that netns' lo up (needs CAP_NET_ADMIN there). 0 when it worked, else -1
 * with errno: the clone's, or the ioctl's passed back as the exit status. */
static long net_admin_in_new_namespaces(void) {
  long pid = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int err = 0;
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
      err = errno;
    } else {
      ifr.ifr_flags |= IFF_UP;
      if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) err = errno;
    }
    syscall(SYS_exit_group, err);
  }
  int status = 0;
  waitpid((pid_t)pid, &status, 0);
  int err = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
  if (err == 0) return 0;
  errno = err;
  return -1;
}

static void clone_probes(void) {
  report("clone_newuser", clone_ns(CLONE_NEWUSER));
  report("clone_newnet", clone_ns(CLONE_NEWNET));
  report("clone_newns", clone_ns(CLONE_NEWNS));
  report("clone_newuser_newnet", clone_ns(CLONE_NEWUSER | CLONE_NEWNET));
  report("clone3_newuser", clone3_ns(CLONE_NEWUSER));
  report("net_admin_in_new_netns", net_admin_in_new_namespaces());
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  if (strncmp(req.head, "GET /clone ", 11) == 0) {
    clone_probes();
  } else if (strncmp(req.head, "GET /socket ", 12) == 0) {
    socket_probes();
  } else {
    basic_probes();
  }
  faas_respond(client, 200, "OK", "text/plain", body, used);
  return 0;
}
