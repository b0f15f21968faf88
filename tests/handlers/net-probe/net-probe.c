/* net-probe: takes the client and tries to reach the network from inside the
 * container, then answers one "probe=ERRNO-NAME" line per attempt ("ok" when it
 * got through). GET /A.B.C.D also probes TCP port 80 of that address (the tests
 * pass another function's IP). Every connect has a 2 s deadline. */
#include "faas_handler.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>

static char body[4096];
static size_t used;

static void report(const char *probe, int err) {
  const char *what = err ? strerrorname_np(err) : "ok";
  used += (size_t)snprintf(body + used, sizeof body - used, "%s=%s\n", probe, what ? what : "?");
}

/* 0 when connected, else the errno. */
static int tcp_connect(int family, const char *ip, int port) {
  struct sockaddr_storage ss = {0};
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) return EINVAL;
    len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((unsigned short)port);
    if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) return EINVAL;
    len = sizeof *a;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = 0;
  if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      struct pollfd p = {fd, POLLOUT, 0};
      if (poll(&p, 1, 2000) == 1) {
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
      } else {
        err = ETIMEDOUT;
      }
    }
  }
  close(fd);
  return err;
}

static int udp_send(const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = sendto(fd, "x", 1, 0, (struct sockaddr *)&a, sizeof a) == 1 ? 0 : errno;
  close(fd);
  return err;
}

static int open_socket(int family, int type, int protocol) {
  int fd = socket(family, type | SOCK_CLOEXEC, protocol);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

static int lo_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  int err = 0;
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    err = errno;
  } else {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) err = errno;
  }
  close(fd);
  return err;
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;

  report("tcp_10.0.0.1", tcp_connect(AF_INET, "10.0.0.1", 80));
  report("tcp_127.0.0.1", tcp_connect(AF_INET, "127.0.0.1", 80));
  report("tcp_::1", tcp_connect(AF_INET6, "::1", 80));
  report("udp_10.0.0.1", udp_send("10.0.0.1", 53));
  report("raw_icmp", open_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  report("raw_tcp", open_socket(AF_INET, SOCK_RAW, IPPROTO_TCP));
  report("packet", open_socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
  report("lo_up", lo_up());
  /* GET /10.0.0.10 HTTP/1.1: probe that address too. */
  char target[64] = "";
  if (sscanf(req.head, "GET /%63[0-9.] ", target) == 1) {
    char probe[96];
    snprintf(probe, sizeof probe, "tcp_%s", target);
    report(probe, tcp_connect(AF_INET, target, 80));
  }
  faas_respond(client, 200, "OK", "text/plain", body, used);
  return 0;
}
