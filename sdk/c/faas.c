/* faas.c: the C SDK for faasd handlers. The contract is in faas.h. */
#define _GNU_SOURCE
#include "faas.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_HEAD ((size_t)64 << 10)
#define DEFAULT_MAX_HEADERS ((size_t)100)
#define DEFAULT_MAX_BODY ((size_t)16 << 20)
#define DEFAULT_TIMEOUT_MS 15000
/* Room after the head for chunk-size lines and trailer fields. */
#define LINE_ROOM ((size_t)8192)
#define MAX_PASSED_FDS 8
#define CLOSE_DRAIN_BYTES ((size_t)1 << 20)
#define CLOSE_DRAIN_MS 2000

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- receiving the client ------------------------------------------------------ */

static void close_all(const int *fds, int count) {
  for (int i = 0; i < count; i++) close(fds[i]);
}

/* Collects the fds of every SCM_RIGHTS message into fds; returns how many. */
static int passed_fds(struct msghdr *msg, int *fds, int max) {
  int count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n && count < max; i++) {
      memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
  }
  return count;
}

int faas_accept(char *err, size_t errlen) {
  const char *path = getenv("FAAS_CONTROL_SOCKET");
  if (path == NULL || path[0] == '\0') path = FAAS_DEFAULT_CONTROL_SOCKET;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t path_len = strlen(path);
  if (path_len >= sizeof addr.sun_path) {
    set_err(err, errlen, "control socket path is too long (%zu bytes): %.80s...", path_len, path);
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(addr.sun_path, path, path_len + 1);

  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    int e = errno;
    set_err(err, errlen, "cannot create a unix socket: %s", strerror(e));
    errno = e;
    return -1;
  }
  if (connect(sock, (const struct sockaddr *)&addr, sizeof addr) != 0) {
    int e = errno;
    close(sock);
    set_err(err, errlen,
            "cannot connect to the control socket %.100s: %s (not started by faasd? "
            "faas-local-run runs a handler locally)",
            path, strerror(e));
    errno = e;
    return -1;
  }

  char payload[16];
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_PASSED_FDS)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  /* No timeout: with faasd's warm pool the client may come minutes after the container
   * started, and faasd alone decides when a waiting container ends. */
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  int recv_errno = errno;
  close(sock);
  if (n < 0) {
    set_err(err, errlen, "cannot receive the client socket on %.100s: %s", path,
            strerror(recv_errno));
    errno = recv_errno;
    return -1;
  }
  int fds[MAX_PASSED_FDS];
  int nfds = passed_fds(&msg, fds, MAX_PASSED_FDS);
  if (n == 6 && memcmp(payload, "SOCKET", 6) == 0 && nfds == 1 &&
      (msg.msg_flags & MSG_CTRUNC) == 0) {
    int fd = fds[0];
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) != 0) (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
  }
  close_all(fds, nfds);
  if (n == 0 && nfds == 0) {
    set_err(err, errlen, "the control socket %.100s closed without passing a client socket", path);
  } else {
    set_err(err, errlen,
            "unexpected message on the control socket %.100s: %zd bytes and %d fds%s, "
            "expected \"SOCKET\" and one fd",
            path, n, nfds, (msg.msg_flags & MSG_CTRUNC) != 0 ? " (truncated)" : "");
  }
  errno = EPROTO;
  return -1;
}

int faas_reuse(void) {
  int saved = errno;
  const char *v = getenv("FAAS_REUSE");
  int uses = 1;
  if (v != NULL && v[0] >= '0' && v[0] <= '9') { /* no sign, no space */
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno == 0 && *end == '\0' && n >= 1) uses = n > INT_MAX ? INT_MAX : (int)n;
  }
  errno = saved;
  return uses;
}

/* ---- reading a request --------------------------------------------------------- */

/* Buffered reads from the client with an overall deadline. */
struct reader {
  int fd;
  char *buf;
  size_t cap;         /* bytes allocated in buf (plus one for a NUL) */
  size_t floor;       /* buf[0, floor) is the parsed head: never moved */
  size_t start;       /* next unread byte */
  size_t end;         /* end of the buffered bytes */
  long long deadline; /* CLOCK_MONOTONIC ms, or -1 for none */
  size_t received;    /* bytes read from fd so far */
};

/* Returns 1 when fd is readable, 0 at the deadline, -1 on error. */
static int wait_readable(const struct reader *r) {
  if (r->deadline < 0) return 1;
  for (;;) {
    long long left = r->deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = r->fd, .events = POLLIN, .revents = 0};
    int rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (rc > 0) return 1;
    if (rc == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

/* Reads at most len bytes into dst: > 0 bytes read, 0 at EOF, -1 with errno
 * (ETIMEDOUT at the deadline). */
static ssize_t read_some(struct reader *r, void *dst, size_t len) {
  int ready = wait_readable(r);
  if (ready == 0) errno = ETIMEDOUT;
  if (ready <= 0) return -1;
  for (;;) {
    ssize_t n = read(r->fd, dst, len);
    if (n >= 0) {
      r->received += (size_t)n;
      return n;
    }
    if (errno != EINTR) return -1;
  }
}

/* What a failed read means: 408 at the deadline, 400 for a request cut short (the
 * client may have only shut down its sending side and still read the answer), -1
 * when there is nobody to answer. */
static int read_failure(const struct reader *r, ssize_t n, const char *where, char *err,
                        size_t errlen) {
  if (n < 0 && errno == ETIMEDOUT) {
    set_err(err, errlen, "timed out reading the request (%s)", where);
    return 408;
  }
  if (n < 0) {
    set_err(err, errlen, "cannot read the request: %s", strerror(errno));
    return -1;
  }
  if (r->received == 0) {
    set_err(err, errlen, "the client closed the connection without sending a request");
    return -1;
  }
  set_err(err, errlen, "the request ended %s", where);
  return 400;
}

/* Reads one line (LF or CRLF terminated, at most LINE_ROOM bytes) of the body section.
 * *line points into the buffer, NUL-terminated, without its line end. Returns 0 or an
 * HTTP status. */
static int read_line(struct reader *r, char **line, size_t *len, const char *what, char *err,
                     size_t errlen) {
  for (;;) {
    char *begin = r->buf + r->start;
    char *nl = memchr(begin, '\n', r->end - r->start);
    size_t l = nl != NULL ? (size_t)(nl - begin) : r->end - r->start;
    if (l > LINE_ROOM) {
      set_err(err, errlen, "a %s is longer than %zu bytes", what, LINE_ROOM);
      return 400;
    }
    if (nl != NULL) {
      r->start += l + 1;
      if (l > 0 && begin[l - 1] == '\r') l--;
      begin[l] = '\0';
      if (memchr(begin, '\r', l) != NULL || strlen(begin) != l) {
        set_err(err, errlen, "bad character in a %s", what);
        return 400;
      }
      *line = begin;
      *len = l;
      return 0;
    }
    if (r->end == r->cap) { /* the head leaves at least LINE_ROOM bytes for a line */
      memmove(r->buf + r->floor, r->buf + r->start, r->end - r->start);
      r->end -= r->start - r->floor;
      r->start = r->floor;
    }
    ssize_t n = read_some(r, r->buf + r->end, r->cap - r->end);
    if (n <= 0) {
      char where[64];
      snprintf(where, sizeof where, "in a %s", what);
      return read_failure(r, n, where, err, errlen);
    }
    r->end += (size_t)n;
  }
}

/* Reads exactly len bytes into dst, buffered ones first. Returns 0 or a status. */
static int read_exact(struct reader *r, char *dst, size_t len, size_t total_before, size_t total,
                      char *err, size_t errlen) {
  size_t have = r->end - r->start;
  if (have > len) have = len;
  memcpy(dst, r->buf + r->start, have);
  r->start += have;
  while (have < len) {
    ssize_t n = read_some(r, dst + have, len - have);
    if (n <= 0) {
      char where[96];
      if (total > 0) {
        snprintf(where, sizeof where, "after %zu of %zu body bytes", total_before + have, total);
      } else {
        snprintf(where, sizeof where, "in the middle of a chunk");
      }
      return read_failure(r, n, where, err, errlen);
    }
    have += (size_t)n;
  }
  return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    if (!is_tchar((unsigned char)s[i])) return 0;
  }
  return 1;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Offset just past the empty line that ends the head in buf[from, end), or 0. */
static size_t find_head_end(const char *buf, size_t from, size_t end) {
  for (size_t i = from; i < end; i++) {
    if (buf[i] != '\n') continue;
    if (i + 1 < end && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < end && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return 0;
}

/* Reads until the empty line after the header fields. Sets *head_begin (after any
 * leading empty lines) and *head_end. Returns 0 or a status. */
static int read_head(struct reader *r, size_t max_head, size_t *head_begin, size_t *head_end,
                     char *err, size_t errlen) {
  size_t skip = 0;
  size_t scanned = 0;
  for (;;) {
    while (skip < r->end && (r->buf[skip] == '\r' || r->buf[skip] == '\n')) skip++;
    if (scanned < skip) scanned = skip;
    size_t found = find_head_end(r->buf, scanned, r->end);
    if (found != 0 && found <= max_head) {
      *head_begin = skip;
      *head_end = found;
      return 0;
    }
    if (found != 0 || r->end >= max_head) {
      size_t seen = found != 0 && found < max_head ? found : max_head;
      if (seen <= skip || memchr(r->buf + skip, '\n', seen - skip) == NULL) {
        set_err(err, errlen, "the request line is longer than %zu bytes", max_head);
        return 414;
      }
      set_err(err, errlen, "the header fields are longer than %zu bytes", max_head);
      return 431;
    }
    scanned = r->end >= 2 ? r->end - 2 : 0;
    ssize_t n = read_some(r, r->buf + r->end, r->cap - r->end);
    if (n <= 0) return read_failure(r, n, "before the end of the header fields", err, errlen);
    r->end += (size_t)n;
  }
}

/* Splits buf[begin, end) into NUL-terminated lines in place; returns the number of
 * lines, or -1 when one holds a CR or NUL byte. */
static long split_lines(char *buf, size_t begin, size_t end) {
  long count = 0;
  size_t pos = begin;
  while (pos < end) {
    char *line = buf + pos;
    char *nl = memchr(line, '\n', end - pos);
    if (nl == NULL) break;
    size_t len = (size_t)(nl - line);
    pos += len + 1;
    if (len > 0 && line[len - 1] == '\r') len--;
    if (len == 0) break; /* the empty line that ends the head */
    if (memchr(line, '\r', len) != NULL || memchr(line, '\0', len) != NULL) return -1;
    line[len] = '\0';
    count++;
  }
  return count;
}

/* Parses the NUL-terminated request line in place. Returns 0 or a status. */
static int parse_request_line(char *line, struct faas_request *req, char *err, size_t errlen) {
  char *sp1 = strchr(line, ' ');
  char *sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
  if (sp1 == NULL || sp2 == NULL || strchr(sp2 + 1, ' ') != NULL ||
      !is_token(line, (size_t)(sp1 - line)) || sp2 == sp1 + 1) {
    set_err(err, errlen, "bad request line \"%.80s\"", line);
    return 400;
  }
  *sp1 = '\0';
  *sp2 = '\0';
  char *target = sp1 + 1;
  const char *version = sp2 + 1;
  for (const char *p = target; *p != '\0'; p++) {
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f) {
      set_err(err, errlen, "bad character in the request target");
      return 400;
    }
  }
  int digits = strncmp(version, "HTTP/", 5) == 0 && is_digit(version[5]) && version[6] == '.' &&
               is_digit(version[7]) && version[8] == '\0';
  if (digits && version[5] == '1') {
    req->version_minor = version[7] == '0' ? 0 : 1; /* 1.x is answered as 1.1 */
  } else if (digits) {
    set_err(err, errlen, "HTTP version \"%.20s\" is not supported (only 1.0 and 1.1)", version);
    return 505;
  } else {
    set_err(err, errlen, "bad HTTP version \"%.20s\"", version);
    return 400;
  }
  req->method = line;

  char *path = target;
  if (target[0] != '/' && strcmp(target, "*") != 0) {
    size_t scheme = strncasecmp(target, "http://", 7) == 0    ? 7
                    : strncasecmp(target, "https://", 8) == 0 ? 8
                                                              : 0;
    if (scheme == 0) {
      set_err(err, errlen, "bad request target \"%.80s\"", target);
      return 400;
    }
    char *rest = target + scheme + strcspn(target + scheme, "/?");
    if (*rest == '/') {
      path = rest;
    } else {
      req->path = "/";
      req->query = *rest == '?' ? rest + 1 : "";
      return 0;
    }
  }
  char *q = strchr(path, '?');
  if (q != NULL) *q = '\0';
  req->path = path;
  req->query = q != NULL ? q + 1 : "";
  return 0;
}

/* Parses one NUL-terminated header field line in place. Returns 0 or a status. */
static int parse_header(char *line, struct faas_header *h, char *err, size_t errlen) {
  if (line[0] == ' ' || line[0] == '\t') {
    set_err(err, errlen, "obsolete line folding in the header fields is not supported");
    return 400;
  }
  char *colon = strchr(line, ':');
  if (colon == NULL || !is_token(line, (size_t)(colon - line))) {
    set_err(err, errlen, "bad header field \"%.60s\"", line);
    return 400;
  }
  *colon = '\0';
  char *value = colon + 1;
  while (*value == ' ' || *value == '\t') value++;
  size_t len = strlen(value);
  while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t')) len--;
  value[len] = '\0';
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)value[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      set_err(err, errlen, "bad character in header field %.60s", line);
      return 400;
    }
  }
  h->name = line;
  h->value = value;
  return 0;
}

/* How the body is framed. */
struct framing {
  int chunked;
  size_t length; /* when not chunked */
};

static int body_framing(const struct faas_request *req, size_t max_body, struct framing *f,
                        char *err, size_t errlen) {
  const char *te = NULL;
  const char *cl = NULL;
  int te_count = 0;
  for (size_t i = 0; i < req->header_count; i++) {
    const struct faas_header *h = &req->headers[i];
    if (strcasecmp(h->name, "Transfer-Encoding") == 0) {
      te = h->value;
      te_count++;
    } else if (strcasecmp(h->name, "Content-Length") == 0) {
      if (cl != NULL && strcmp(cl, h->value) != 0) {
        set_err(err, errlen, "conflicting Content-Length values %.30s and %.30s", cl, h->value);
        return 400;
      }
      cl = h->value;
    }
  }
  f->chunked = 0;
  f->length = 0;
  if (te_count > 0) {
    if (cl != NULL) {
      set_err(err, errlen, "both Transfer-Encoding and Content-Length are set");
      return 400;
    }
    if (te_count > 1 || strcasecmp(te, "chunked") != 0) {
      set_err(err, errlen, "Transfer-Encoding \"%.40s\" is not supported (only chunked)", te);
      return 501;
    }
    f->chunked = 1;
    return 0;
  }
  if (cl == NULL) return 0;
  if (cl[0] == '\0') {
    set_err(err, errlen, "empty Content-Length");
    return 400;
  }
  size_t length = 0;
  for (const char *p = cl; *p != '\0'; p++) {
    if (*p < '0' || *p > '9') {
      set_err(err, errlen, "bad Content-Length \"%.30s\"", cl);
      return 400;
    }
    size_t digit = (size_t)(*p - '0');
    if (length > (SIZE_MAX - digit) / 10) {
      length = SIZE_MAX;
    } else {
      length = length * 10 + digit;
    }
  }
  if (length > max_body) {
    set_err(err, errlen, "the body of %.30s bytes is over the limit of %zu bytes", cl, max_body);
    return 413;
  }
  f->length = length;
  return 0;
}

/* Grows *body to hold at least need bytes, at most limit. Returns 0 or -1. */
static int grow(char **body, size_t *cap, size_t need, size_t limit) {
  if (need <= *cap) return 0;
  size_t c = *cap != 0 ? *cap : 4096;
  while (c < need) c = c > SIZE_MAX / 2 ? need : c * 2;
  if (c > limit && need <= limit) c = limit;
  char *p = realloc(*body, c);
  if (p == NULL) return -1;
  *body = p;
  *cap = c;
  return 0;
}

/* Parses a chunk-size line: hex digits, optional whitespace, optional extensions. */
static int parse_chunk_size(const char *line, size_t len, size_t *size, char *err, size_t errlen) {
  size_t i = 0;
  size_t value = 0;
  int overflow = 0;
  while (i < len && hex_value((unsigned char)line[i]) >= 0) {
    if (value > (SIZE_MAX >> 4)) overflow = 1;
    value = (value << 4) | (size_t)hex_value((unsigned char)line[i]);
    i++;
  }
  size_t digits = i;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  if (digits == 0 || (i < len && line[i] != ';')) {
    set_err(err, errlen, "bad chunk size \"%.40s\"", line);
    return 400;
  }
  *size = overflow ? SIZE_MAX : value;
  return 0;
}

static int read_chunked(struct reader *r, size_t max_body, size_t max_trailer, char **out,
                        size_t *out_len, char *err, size_t errlen) {
  char *body = NULL;
  size_t len = 0;
  size_t cap = 0;
  int status = 0;
  for (;;) {
    char *line;
    size_t line_len;
    size_t size;
    if ((status = read_line(r, &line, &line_len, "chunk size line", err, errlen)) != 0) break;
    if ((status = parse_chunk_size(line, line_len, &size, err, errlen)) != 0) break;
    if (size == 0) break;
    if (size > max_body - len) {
      set_err(err, errlen, "the chunked body is over the limit of %zu bytes", max_body);
      status = 413;
      break;
    }
    if (grow(&body, &cap, len + size + 1, max_body + 1) != 0) {
      set_err(err, errlen, "out of memory for a body of %zu bytes", len + size);
      status = 500;
      break;
    }
    if ((status = read_exact(r, body + len, size, len, 0, err, errlen)) != 0) break;
    len += size;
    if ((status = read_line(r, &line, &line_len, "chunk end", err, errlen)) != 0) break;
    if (line_len != 0) {
      set_err(err, errlen, "chunk data is not followed by a line end");
      status = 400;
      break;
    }
  }
  size_t trailer = 0;
  while (status == 0) { /* trailer fields, ignored, up to the empty line */
    char *line;
    size_t line_len;
    if ((status = read_line(r, &line, &line_len, "trailer field", err, errlen)) != 0) break;
    if (line_len == 0) break;
    trailer += line_len;
    if (trailer > max_trailer) {
      set_err(err, errlen, "the trailer fields are longer than %zu bytes", max_trailer);
      status = 431;
    }
  }
  if (status == 0 && grow(&body, &cap, len + 1, max_body + 1) != 0) {
    set_err(err, errlen, "out of memory");
    status = 500;
  }
  if (status != 0) {
    free(body);
    return status;
  }
  body[len] = '\0';
  *out = body;
  *out_len = len;
  return 0;
}

/* What faas_request.storage_ owns. */
struct storage {
  char *head;
  struct faas_header *headers;
  char *body;
};

static int send_all(int fd, struct iovec *iov, int count);

/* Sends "100 Continue" when an HTTP/1.1 client waits for it before sending a body we are
 * going to read (curl does for bodies over 1 MiB, for a second). */
static int send_continue(int fd, const struct faas_request *req, const struct framing *f, char *err,
                         size_t errlen) {
  const char *expect = faas_get_header(req, "Expect");
  if (req->version_minor < 1 || expect == NULL || strcasecmp(expect, "100-continue") != 0 ||
      (!f->chunked && f->length == 0)) {
    return 0;
  }
  static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
  struct iovec iov = {.iov_base = (void *)kContinue, .iov_len = sizeof kContinue - 1};
  if (send_all(fd, &iov, 1) != 0) {
    set_err(err, errlen, "cannot send 100 Continue: %s", strerror(errno));
    return -1;
  }
  return 0;
}

static int read_body(struct reader *r, const struct faas_request *req, size_t max_body,
                     size_t max_trailer, char **body, size_t *len, char *err, size_t errlen) {
  struct framing f;
  int status = body_framing(req, max_body, &f, err, errlen);
  if (status != 0) return status;
  status = send_continue(r->fd, req, &f, err, errlen);
  if (status != 0) return status;
  if (f.chunked) return read_chunked(r, max_body, max_trailer, body, len, err, errlen);
  char *b = malloc(f.length + 1);
  if (b == NULL) {
    set_err(err, errlen, "out of memory for a body of %zu bytes", f.length);
    return 500;
  }
  status = read_exact(r, b, f.length, 0, f.length, err, errlen);
  if (status != 0) {
    free(b);
    return status;
  }
  b[f.length] = '\0';
  *body = b;
  *len = f.length;
  return 0;
}

static int parse_head(char *buf, size_t begin, size_t end, size_t max_headers,
                      struct faas_request *req, struct faas_header **headers, char *err,
                      size_t errlen) {
  long lines = split_lines(buf, begin, end);
  if (lines < 0) {
    set_err(err, errlen, "bad character (CR or NUL) in the request head");
    return 400;
  }
  size_t count = (size_t)lines - 1; /* the request line is not a field */
  if (count > max_headers) {
    set_err(err, errlen, "%zu header fields, more than the limit of %zu", count, max_headers);
    return 431;
  }
  char *line = buf + begin;
  /* Lines are NUL-terminated, and what ended each (\n or \r\n) follows the NUL. */
  char *p = line + strlen(line) + 1;
  int status = parse_request_line(line, req, err, errlen); /* puts more NULs in line */
  if (status != 0) return status;
  *headers = calloc(count + 1, sizeof **headers);
  if (*headers == NULL) {
    set_err(err, errlen, "out of memory");
    return 500;
  }
  for (size_t i = 0; i < count; i++) {
    while (*p == '\n' || *p == '\0') p++;
    char *next = p + strlen(p) + 1;
    if ((status = parse_header(p, &(*headers)[i], err, errlen)) != 0) return status;
    p = next;
  }
  req->headers = *headers;
  req->header_count = count;
  return 0;
}

int faas_read_request(int fd, struct faas_request *req, const struct faas_limits *limits, char *err,
                      size_t errlen) {
  memset(req, 0, sizeof *req);
  size_t max_head = limits != NULL && limits->max_head != 0 ? limits->max_head : DEFAULT_MAX_HEAD;
  size_t max_headers =
      limits != NULL && limits->max_headers != 0 ? limits->max_headers : DEFAULT_MAX_HEADERS;
  size_t max_body = limits != NULL && limits->max_body != 0 ? limits->max_body : DEFAULT_MAX_BODY;
  int timeout_ms =
      limits != NULL && limits->timeout_ms != 0 ? limits->timeout_ms : DEFAULT_TIMEOUT_MS;
  if (max_head > SIZE_MAX / 2) max_head = SIZE_MAX / 2;

  struct reader r;
  memset(&r, 0, sizeof r);
  r.fd = fd;
  r.cap = max_head + LINE_ROOM + 2; /* room for a longest line and its CRLF */
  r.deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  r.buf = malloc(r.cap + 1);
  if (r.buf == NULL) {
    set_err(err, errlen, "out of memory");
    return 500;
  }
  struct storage *st = calloc(1, sizeof *st);
  if (st == NULL) {
    free(r.buf);
    set_err(err, errlen, "out of memory");
    return 500;
  }
  st->head = r.buf;

  size_t head_begin = 0;
  size_t head_end = 0;
  int status = read_head(&r, max_head, &head_begin, &head_end, err, errlen);
  if (status == 0) {
    status = parse_head(r.buf, head_begin, head_end, max_headers, req, &st->headers, err, errlen);
  }
  if (status == 0) {
    r.floor = r.start = head_end;
    status = read_body(&r, req, max_body, max_head, &st->body, &req->body_len, err, errlen);
  }
  if (status != 0) {
    free(st->headers);
    free(st->head);
    free(st);
    memset(req, 0, sizeof *req);
    return status;
  }
  req->body = st->body;
  req->storage_ = st;
  return 0;
}

void faas_request_free(struct faas_request *req) {
  if (req == NULL) return;
  struct storage *st = req->storage_;
  if (st != NULL) {
    free(st->head);
    free(st->headers);
    free(st->body);
    free(st);
  }
  memset(req, 0, sizeof *req);
}

const char *faas_get_header(const struct faas_request *req, const char *name) {
  for (size_t i = 0; i < req->header_count; i++) {
    if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
  }
  return NULL;
}

/* Decodes the next byte of form-encoded s[*i, n) and advances *i. */
static char decode_next(const char *s, size_t n, size_t *i) {
  char c = s[*i];
  if (c == '+') {
    c = ' ';
  } else if (c == '%' && *i + 2 < n && hex_value((unsigned char)s[*i + 1]) >= 0 &&
             hex_value((unsigned char)s[*i + 2]) >= 0) {
    c = (char)(hex_value((unsigned char)s[*i + 1]) * 16 + hex_value((unsigned char)s[*i + 2]));
    *i += 2;
  }
  (*i)++;
  return c;
}

ssize_t faas_query_param(const struct faas_request *req, const char *name, char *out,
                         size_t outlen) {
  if (outlen > 0) out[0] = '\0';
  const char *q = req->query != NULL ? req->query : "";
  while (*q != '\0') {
    size_t pair = strcspn(q, "&");
    size_t key_len = strcspn(q, "=");
    if (key_len > pair) key_len = pair;
    /* Compare the decoded key with name. */
    size_t i = 0;
    const char *want = name;
    int equal = 1;
    while (i < key_len) {
      char c = decode_next(q, key_len, &i);
      if (*want == '\0' || c != *want) {
        equal = 0;
        break;
      }
      want++;
    }
    if (equal && *want == '\0') {
      const char *value = key_len < pair ? q + key_len + 1 : q + pair;
      size_t value_len = (size_t)(q + pair - value);
      size_t o = 0;
      for (size_t j = 0; j < value_len;) {
        char c = decode_next(value, value_len, &j);
        if (o + 1 >= outlen) {
          if (outlen > 0) out[0] = '\0';
          return -2;
        }
        out[o++] = c;
      }
      if (o >= outlen) return -2;
      out[o] = '\0';
      return (ssize_t)o;
    }
    q += pair;
    if (*q == '&') q++;
  }
  return -1;
}

/* ---- writing the response ------------------------------------------------------ */

const char *faas_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

/* Writes every byte of iov[0, count), as one message when the kernel allows. */
static int send_all(int fd, struct iovec *iov, int count) {
  int use_write = 0;
  while (count > 0) {
    ssize_t n;
    if (use_write) {
      n = writev(fd, iov, count);
    } else {
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = iov;
      msg.msg_iovlen = (size_t)count;
      n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOTSOCK && !use_write) {
        use_write = 1;
        continue;
      }
      return -1;
    }
    size_t done = (size_t)n;
    while (count > 0 && done >= iov->iov_len) {
      done -= iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (char *)iov->iov_base + done;
      iov->iov_len -= done;
    }
  }
  return 0;
}

static int valid_field(const struct faas_header *h) {
  if (h->name == NULL || h->value == NULL || !is_token(h->name, strlen(h->name))) return 0;
  return strpbrk(h->value, "\r\n") == NULL;
}

int faas_respond_headers(int fd, int status, const struct faas_header *headers, size_t count,
                         const void *body, size_t len) {
  if (status < 200 || status > 599) {
    errno = EINVAL;
    return -1;
  }
  size_t size = 64;
  for (size_t i = 0; i < count; i++) {
    if (!valid_field(&headers[i])) {
      errno = EINVAL;
      return -1;
    }
    size += strlen(headers[i].name) + strlen(headers[i].value) + 4;
  }
  int bodyless = status == 204 || status == 304;
  size += 64;
  char *head = malloc(size);
  if (head == NULL) return -1;
  int n = snprintf(head, size, "HTTP/1.1 %d %s\r\n", status, faas_reason(status));
  size_t used = (size_t)n;
  for (size_t i = 0; i < count; i++) {
    n = snprintf(head + used, size - used, "%s: %s\r\n", headers[i].name, headers[i].value);
    used += (size_t)n;
  }
  if (!bodyless) {
    n = snprintf(head + used, size - used, "Content-Length: %zu\r\n", len);
    used += (size_t)n;
  }
  n = snprintf(head + used, size - used, "Connection: close\r\n\r\n");
  used += (size_t)n;
  struct iovec iov[2] = {{.iov_base = head, .iov_len = used},
                         {.iov_base = (void *)body, .iov_len = bodyless ? 0 : len}};
  int rc = send_all(fd, iov, iov[1].iov_len > 0 ? 2 : 1);
  int saved = errno;
  free(head);
  errno = saved;
  return rc;
}

int faas_respond(int fd, int status, const char *content_type, const void *body, size_t len) {
  struct faas_header type = {.name = "Content-Type", .value = content_type};
  return faas_respond_headers(fd, status, &type, content_type != NULL ? 1 : 0, body, len);
}

int faas_respond_error(int fd, int status, const char *message) {
  if (message == NULL || message[0] == '\0') message = faas_reason(status);
  size_t len = strlen(message);
  char *body = malloc(len + 2);
  if (body == NULL) return -1;
  memcpy(body, message, len);
  body[len] = '\n';
  int rc = faas_respond(fd, status, "text/plain; charset=utf-8", body, len + 1);
  int saved = errno;
  free(body);
  errno = saved;
  return rc;
}

void faas_close(int fd) {
  if (fd < 0) return;
  if (shutdown(fd, SHUT_WR) == 0) {
    long long deadline = now_ms() + CLOSE_DRAIN_MS;
    size_t drained = 0;
    char buf[4096];
    while (drained < CLOSE_DRAIN_BYTES) {
      long long left = deadline - now_ms();
      if (left <= 0) break;
      struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
      int rc = poll(&p, 1, (int)left);
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) break;
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      drained += (size_t)n;
    }
  }
  close(fd);
}

/* Serves one client and closes it. Returns its exit status. */
static int serve_client(int client, faas_handler_fn fn, const struct faas_limits *limits,
                        void *ctx) {
  char err[FAAS_ERR_MAX];
  struct faas_request req;
  int status = faas_read_request(client, &req, limits, err, sizeof err);
  int exit_status;
  if (status == 0) {
    exit_status = fn(client, &req, ctx);
    faas_request_free(&req);
  } else if (status > 0) {
    fprintf(stderr, "faas: answering %d: %s\n", status, err);
    exit_status = faas_respond_error(client, status, err) == 0 ? 0 : 1;
  } else {
    fprintf(stderr, "faas: %s\n", err);
    exit_status = 1;
  }
  faas_close(client);
  return exit_status;
}

int faas_serve(faas_handler_fn fn, const struct faas_limits *limits, void *ctx) {
  int uses = faas_reuse();
  int exit_status = 1;
  for (int served = 0; served < uses; served++) {
    char err[FAAS_ERR_MAX];
    int client = faas_accept(err, sizeof err);
    if (client < 0) {
      /* faasd stops listening once it has handed this container all its clients. */
      if (served > 0 && (errno == ECONNREFUSED || errno == ENOENT)) break;
      fprintf(stderr, "faas: %s\n", err);
      return 1;
    }
    exit_status = serve_client(client, fn, limits, ctx);
  }
  return exit_status;
}
