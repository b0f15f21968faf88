/* control-twice: connects to /control.sock more than once and answers, on the
 * client socket the first connection delivered, what each attempt got. The mode
 * comes from the environment (`faas new --env CONTROL_TWICE_MODE=race`), since the
 * request can only be read once the first connection has delivered the client:
 *
 *   (default)    connect, receive the client, then connect again:
 *                "first=ok\nsecond_connect=ERRNO-NAME\n"
 *   race         connect twice before receiving anything, then read both:
 *                "first=ok\nsecond_connect=ok|ERRNO-NAME\nsecond_fd=none:WHY|RECEIVED\n"
 */
#include "faas_handler.h"

#include <errno.h>
#include <poll.h>

static char body[1024];
static size_t used;

static void report(const char *key, const char *value) {
  used += (size_t)snprintf(body + used, sizeof body - used, "%s=%s\n", key, value);
}

static const char *errname(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "?";
}

/* The fd faasd sent on `sock` within timeout_ms (-1: however long it takes), or -1
 * with *what saying why not. */
static int receive_fd(int sock, int timeout_ms, const char **what) {
  struct pollfd p = {sock, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) {
    *what = "none:timeout";
    return -1;
  }
  char payload[16];
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {payload, sizeof payload};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) {
    static char buf[64];
    snprintf(buf, sizeof buf, "none:%s", errname(errno));
    *what = buf;
    return -1;
  }
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (n == 0 || cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS) {
    *what = n == 0 ? "none:EOF" : "none:no-fd";
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
  *what = "RECEIVED";
  return fd;
}

int main(void) {
  int err = 0;
  const char *what = NULL;
  int first = faas_control_connect(0, &err);
  if (first < 0) return 1;

  static struct faas_request req;
  int client = -1;
  int second = -1, second_err = 0;
  const char *mode = getenv("CONTROL_TWICE_MODE");
  int race = mode && strcmp(mode, "race") == 0;
  if (race) second = faas_control_connect(SOCK_NONBLOCK, &second_err);
  /* No timeout on the first: with a warm pool the client may come much later. */
  client = receive_fd(first, -1, &what);
  close(first);
  if (client < 0) return 1;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  report("first", "ok");
  if (!race) second = faas_control_connect(0, &second_err);
  report("second_connect", second < 0 ? errname(second_err) : "ok");
  if (second >= 0) {
    int fd = receive_fd(second, 1000, &what);
    report("second_fd", what);
    if (fd >= 0) close(fd);
    close(second);
  }
  faas_respond(client, 200, "OK", "text/plain", body, used);
  return 0;
}
