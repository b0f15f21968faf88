/* rofs-writer: takes the client and tries to change the read-only root filesystem
 * in every way it can, then answers one "operation=ERRNO-NAME" line per attempt
 * ("ok" when it succeeded). /tmp, a tmpfs, is the control: writing there works. */
#include "faas_handler.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>

static char body[4096];
static size_t used;

static void report(const char *op, int rc) {
  const char *what = "ok";
  if (rc < 0) {
    what = strerrorname_np(errno);
    if (!what) what = "?";
  }
  used += (size_t)snprintf(body + used, sizeof body - used, "%s=%s\n", op, what);
}

static int create_file(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int rc = write(fd, "pwned\n", 6) == 6 ? 0 : -1;
  close(fd);
  return rc;
}

static int append_to(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = write(fd, "pwned\n", 6) == 6 ? 0 : -1;
  close(fd);
  return rc;
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;

  report("create", create_file("/pwned"));
  report("mkdir", mkdir("/pwned-dir", 0755));
  report("append_handler", append_to("/handler"));
  report("truncate_handler", truncate("/handler", 0));
  report("chmod_handler", chmod("/handler", 04777));
  report("chown_handler", chown("/handler", 1000, 1000));
  report("utimes_handler", utimes("/handler", NULL));
  report("rename_handler", rename("/handler", "/handler.moved"));
  report("unlink_handler", unlink("/handler"));
  report("link_handler", link("/handler", "/handler.link"));
  report("symlink", symlink("/handler", "/pwned-link"));
  report("mkfifo", mknod("/pwned-fifo", S_IFIFO | 0644, 0));
  report("rmdir_proc", rmdir("/proc"));
  report("write_proc_sys", append_to("/proc/sys/kernel/hostname"));
  report("create_sys", create_file("/sys/pwned"));
  report("create_tmp", create_file("/tmp/probe"));
  report("unlink_tmp", unlink("/tmp/probe"));
  faas_respond(client, 200, "OK", "text/plain", body, used);
  return 0;
}
