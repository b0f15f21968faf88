/* Shared by the test handlers (static C, no libc beyond the basics): take the
 * client socket from faasd over /control.sock (SCM_RIGHTS, payload "SOCKET"),
 * read an HTTP request, write a response. */
#ifndef FAAS_TEST_HANDLER_H
#define FAAS_TEST_HANDLER_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A connection to the control socket ($FAAS_CONTROL_SOCKET, else /control.sock),
 * opened with SOCK_CLOEXEC | `flags`; or -1 with *err set (0 on success). */
static inline int faas_control_connect(int flags, int *err) {
  const char *path = getenv("FAAS_CONTROL_SOCKET");
  if (!path) path = "/control.sock";
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  if (sock < 0) {
    *err = errno;
    return -1;
  }
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
    *err = errno;
    close(sock);
    return -1;
  }
  *err = 0;
  return sock;
}

static inline int faas_receive_client(void) {
  int err;
  int sock = faas_control_connect(0, &err);
  if (sock < 0) {
    errno = err;
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

static inline int faas_write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* A parsed request: the header block (NUL-terminated, request line first) and the
 * body of Content-Length bytes (at most max_body; malloc'ed, caller frees). */
struct faas_request {
  char head[16384];
  size_t head_len;
  char *body;
  size_t body_len;
};

/* Returns 0 on success, -1 on a short read or an oversized request. */
static inline int faas_read_request(int fd, struct faas_request *req, size_t max_body) {
  char buf[16384];
  size_t used = 0;
  char *end = NULL;
  while (!(end = memmem(buf, used, "\r\n\r\n", 4))) {
    if (used == sizeof buf) return -1;
    ssize_t n = read(fd, buf + used, sizeof buf - used);
    if (n <= 0) return -1;
    used += (size_t)n;
  }
  req->head_len = (size_t)(end - buf);
  memcpy(req->head, buf, req->head_len);
  req->head[req->head_len] = '\0';
  size_t content_length = 0;
  for (char *line = strstr(req->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    if (strncasecmp(line + 2, "Content-Length:", 15) == 0) {
      content_length = strtoull(line + 2 + 15, NULL, 10);
      break;
    }
  }
  if (content_length > max_body) return -1;
  req->body = malloc(content_length + 1);
  if (!req->body) return -1;
  size_t have = used - (req->head_len + 4);
  if (have > content_length) have = content_length;
  memcpy(req->body, end + 4, have);
  while (have < content_length) {
    ssize_t n = read(fd, req->body + have, content_length - have);
    if (n <= 0) return -1;
    have += (size_t)n;
  }
  req->body_len = content_length;
  return 0;
}

static inline int faas_respond(int fd, int status, const char *reason, const char *type,
                               const char *body, size_t body_len) {
  char head[512];
  int head_len = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n",
                          status, reason, type, body_len);
  if (faas_write_all(fd, head, (size_t)head_len) != 0) return -1;
  if (body_len && faas_write_all(fd, body, body_len) != 0) return -1;
  shutdown(fd, SHUT_WR);
  return 0;
}

#endif
