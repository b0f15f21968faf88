/* greedy: tries to serve more than one client. After taking a client and reading its
 * request it connects to /control.sock again, and again after every client it gets
 * (up to 8), waiting at most 1 s for each further client. Then it answers every
 * client it got with
 *
 *   served=N          how many clients this process received
 *   id=HEX            random, one per process: tells containers apart
 *   reconnect=WHAT    how the first extra connect went: ok or an errno name
 *
 * A container serves exactly one client, so every answer says served=1. */
#include "faas_handler.h"

#include <errno.h>
#include <poll.h>
#include <sys/random.h>

#define MAX_CLIENTS 8

/* The client fd faasd sends on `sock` within 1 s, or -1. */
static int another_client(int sock) {
  struct pollfd p = {sock, POLLIN, 0};
  if (poll(&p, 1, 1000) != 1) return -1;
  char payload[16];
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {payload, sizeof payload};
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (n != 6 || cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
  return fd;
}

int main(void) {
  static struct faas_request req;
  int clients[MAX_CLIENTS];
  int served = 0;
  char reconnect[64] = "";

  int fd = faas_receive_client();
  while (fd >= 0 && served < MAX_CLIENTS) {
    if (faas_read_request(fd, &req, 0) != 0) return 1;
    free(req.body);
    clients[served++] = fd;
    int err = 0;
    int sock = faas_control_connect(0, &err);
    if (reconnect[0] == '\0') {
      const char *name = strerrorname_np(err);
      snprintf(reconnect, sizeof reconnect, "%s", sock >= 0 ? "ok" : name ? name : "?");
    }
    if (sock < 0) break;
    fd = another_client(sock);
    close(sock);
  }
  if (served == 0) return 1;

  unsigned long long id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) return 1;
  char body[128];
  int len =
      snprintf(body, sizeof body, "served=%d\nid=%016llx\nreconnect=%s\n", served, id, reconnect);
  for (int i = 0; i < served; i++)
    faas_respond(clients[i], 200, "OK", "text/plain", body, (size_t)len);
  return 0;
}
