#define _GNU_SOURCE
/* The smallest useful handler: take the client socket from faasd and answer
 * "Hello from FaaS handler!" with the request line echoed back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int receive_client(const char *path) {
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
    perror("connect control socket");
    return -1;
  }
  char payload[16];
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {payload, sizeof payload};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  close(sock);
  if (n != 6 || memcmp(payload, "SOCKET", 6) != 0 || cmsg == NULL ||
      cmsg->cmsg_type != SCM_RIGHTS) {
    fprintf(stderr, "unexpected message on control socket\n");
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
  return fd;
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

int main(void) {
  const char *path = getenv("FAAS_CONTROL_SOCKET");
  int client = receive_client(path ? path : "/control.sock");
  if (client < 0) return 1;

  char request[8192];
  size_t used = 0;
  while (used < sizeof request - 1 && !memmem(request, used, "\r\n\r\n", 4)) {
    ssize_t n = read(client, request + used, sizeof request - 1 - used);
    if (n <= 0) break;
    used += (size_t)n;
  }
  request[used] = '\0';
  char *eol = strstr(request, "\r\n");
  if (eol) *eol = '\0';

  char body[8400];
  int body_len = snprintf(body, sizeof body, "Hello from FaaS handler!\n\nRequest: %s\n", request);
  char head[256];
  int head_len = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          "Content-Length: %d\r\nConnection: close\r\n\r\n", body_len);
  if (write_all(client, head, (size_t)head_len) != 0 || write_all(client, body, (size_t)body_len) != 0)
    return 1;
  shutdown(client, SHUT_WR);
  close(client);
  return 0;
}
