/* faas-stdio: turns any program that reads stdin and writes stdout into a faasd
 * function, CGI style.
 *
 *   CMD ["/faas-stdio", "/bin/busybox", "wc", "-c"]
 *
 * faas-stdio receives the client socket from faasd, reads one HTTP request, runs
 * PROGRAM ARG... (no shell; PROGRAM is searched in PATH when it has no '/') with
 * the request body on its stdin and these environment variables added to its own:
 *
 *   GATEWAY_INTERFACE  CGI/1.1
 *   SERVER_PROTOCOL    HTTP/1.1 or HTTP/1.0
 *   REQUEST_METHOD     GET, POST, ...
 *   REQUEST_URI        the path and query as sent
 *   PATH_INFO          the path, percent-decoded (%00 stays encoded)
 *   QUERY_STRING       what follows '?', as sent ("" when none)
 *   CONTENT_TYPE       the Content-Type header, when the request has one
 *   CONTENT_LENGTH     the body length in bytes, when the request has a body
 *   REMOTE_ADDR, REMOTE_PORT, SERVER_ADDR, SERVER_PORT   the TCP connection
 *   HTTP_<NAME>        each other header, NAME upper-cased with '-' as '_'; repeated
 *                      headers joined with ", ". Headers whose name has a '_'
 *                      (ambiguous) and Proxy (httpoxy) are not passed.
 *
 * Variables of those names already in the environment are removed first.
 * The answer:
 *   exit 0           200, the program's stdout as the body
 *   other exit       500 "PROGRAM exited with status N" (or "was killed by signal N")
 *   cannot start     500 "cannot run PROGRAM: <reason>"
 *   too slow         504 after FAAS_STDIO_TIMEOUT_MS; the program is killed
 *   too much output  500 after FAAS_STDIO_MAX_OUTPUT bytes; the program is killed
 *   bad request      the 4xx/5xx of the C SDK, without running the program
 * The program's stderr is copied to faas-stdio's stderr as it arrives (faasd's log).
 *
 * A function deployed with `faas new --reuse N` (FAAS_REUSE=N) gets up to N clients in
 * turn: faas-stdio serves each as above, running PROGRAM afresh for every one, and exits
 * when faasd has no more (the next connect to the control socket is refused). Only the
 * faas-stdio process and what PROGRAM leaves in /tmp carry over between them.
 *
 * Settings, from the environment (ENV in the Dockerfile):
 *   FAAS_STDIO_CONTENT_TYPE  Content-Type of 200 answers (text/plain; charset=utf-8)
 *   FAAS_STDIO_MAX_BODY      largest request body accepted, bytes (16 MiB)
 *   FAAS_STDIO_MAX_OUTPUT    largest output accepted, bytes (64 MiB)
 *   FAAS_STDIO_TIMEOUT_MS    how long the program may run (default: 5/6 of faasd's run
 *                            timeout, FAAS_TIMEOUT_MS, or 25000 without it, so the
 *                            client gets a 504, not a reset)
 *
 * Exit status, of the last client: 0 when the program succeeded and the answer was
 * sent, or a malformed request was answered; 1 otherwise.
 * Build: gcc -static -O2 -I sdk/c -o faas-stdio sdk/stdio/faas-stdio.c sdk/c/faas.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faas.h"

extern char **environ;

#define DEFAULT_CONTENT_TYPE "text/plain; charset=utf-8"
#define DEFAULT_MAX_BODY ((size_t)16 << 20)
#define DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define DEFAULT_TIMEOUT_MS 25000

static const char kUsage[] =
    "usage: faas-stdio PROGRAM [ARG...]\n"
    "Serves faasd requests (one, or $FAAS_REUSE in turn): runs PROGRAM with the request\n"
    "body on stdin and CGI variables in the environment, and answers with its stdout\n"
    "(200) or 500 when it fails. See the comment at the top of sdk/stdio/faas-stdio.c.\n";

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("faas-stdio: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t env_size(const char *name, size_t fallback) {
  const char *v = getenv(name);
  if (v == NULL || v[0] == '\0') return fallback;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno != 0 || *end != '\0' || v[0] == '-' || n == 0) {
    logf_("ignoring %s=%s: not a positive number", name, v);
    return fallback;
  }
  return (size_t)n;
}

/* ---- the environment of the program ------------------------------------------- */

struct strv {
  char **items;
  size_t len;
  size_t cap;
};

/* Appends a malloc'ed string (takes ownership). Returns 0 or -1. */
static int strv_push(struct strv *v, char *s) {
  if (s == NULL) return -1;
  if (v->len + 2 > v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    char **items = realloc(v->items, cap * sizeof *items);
    if (items == NULL) {
      free(s);
      return -1;
    }
    v->items = items;
    v->cap = cap;
  }
  v->items[v->len++] = s;
  v->items[v->len] = NULL;
  return 0;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static int is_cgi_name(const char *entry) {
  static const char *const kNames[] = {
      "GATEWAY_INTERFACE=", "SERVER_PROTOCOL=", "REQUEST_METHOD=", "REQUEST_URI=",
      "PATH_INFO=",         "QUERY_STRING=",    "CONTENT_TYPE=",   "CONTENT_LENGTH=",
      "REMOTE_ADDR=",       "REMOTE_PORT=",     "SERVER_ADDR=",    "SERVER_PORT=",
  };
  if (strncmp(entry, "HTTP_", 5) == 0) return 1;
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; i++) {
    if (strncmp(entry, kNames[i], strlen(kNames[i])) == 0) return 1;
  }
  return 0;
}

static int hex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The path with %XX decoded, except %00. */
static char *decode_path(const char *path) {
  size_t len = strlen(path);
  char *out = malloc(len + 1);
  if (out == NULL) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (path[i] == '%' && i + 2 < len && hex(path[i + 1]) >= 0 && hex(path[i + 2]) >= 0) {
      int c = hex(path[i + 1]) * 16 + hex(path[i + 2]);
      if (c != 0) {
        out[o++] = (char)c;
        i += 2;
        continue;
      }
    }
    out[o++] = path[i];
  }
  out[o] = '\0';
  return out;
}

/* "Content-Type" -> "HTTP_CONTENT_TYPE"; NULL for names not passed on. */
static char *cgi_header_name(const char *name) {
  if (strchr(name, '_') != NULL || strcasecmp(name, "Proxy") == 0 ||
      strcasecmp(name, "Content-Type") == 0 || strcasecmp(name, "Content-Length") == 0) {
    return NULL;
  }
  char *out = format("HTTP_%s", name);
  if (out == NULL) return NULL;
  for (char *p = out + 5; *p != '\0'; p++) {
    *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
  }
  return out;
}

static void add_address(struct strv *env, const char *prefix, const struct sockaddr_storage *ss) {
  char host[INET6_ADDRSTRLEN] = "";
  unsigned port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    return;
  }
  strv_push(env, format("%s_ADDR=%s", prefix, host));
  strv_push(env, format("%s_PORT=%u", prefix, port));
}

static int build_env(int client, const struct faas_request *req, struct strv *env) {
  for (char **e = environ; *e != NULL; e++) {
    if (!is_cgi_name(*e) && strv_push(env, strdup(*e)) != 0) return -1;
  }
  char *path_info = decode_path(req->path);
  int failed = strv_push(env, format("GATEWAY_INTERFACE=CGI/1.1")) |
               strv_push(env, format("SERVER_PROTOCOL=HTTP/1.%d", req->version_minor)) |
               strv_push(env, format("REQUEST_METHOD=%s", req->method)) |
               strv_push(env, format("REQUEST_URI=%s%s%s", req->path, req->query[0] ? "?" : "",
                                     req->query)) |
               strv_push(env, path_info ? format("PATH_INFO=%s", path_info) : NULL) |
               strv_push(env, format("QUERY_STRING=%s", req->query));
  free(path_info);
  const char *type = faas_get_header(req, "Content-Type");
  if (type != NULL) failed |= strv_push(env, format("CONTENT_TYPE=%s", type));
  if (faas_get_header(req, "Content-Length") != NULL ||
      faas_get_header(req, "Transfer-Encoding") != NULL)
    failed |= strv_push(env, format("CONTENT_LENGTH=%zu", req->body_len));
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(client, (struct sockaddr *)&ss, &len) == 0) add_address(env, "REMOTE", &ss);
  len = sizeof ss;
  if (getsockname(client, (struct sockaddr *)&ss, &len) == 0) add_address(env, "SERVER", &ss);

  for (size_t i = 0; i < req->header_count; i++) {
    char *name = cgi_header_name(req->headers[i].name);
    if (name == NULL) continue;
    size_t name_len = strlen(name);
    int merged = 0;
    for (size_t j = 0; j < env->len && !merged; j++) {
      char *e = env->items[j];
      if (strncmp(e, name, name_len) == 0 && e[name_len] == '=') {
        char *joined = format("%s, %s", e, req->headers[i].value);
        if (joined == NULL)
          failed = 1;
        else {
          free(e);
          env->items[j] = joined;
        }
        merged = 1;
      }
    }
    if (!merged) failed |= strv_push(env, format("%s=%s", name, req->headers[i].value));
    free(name);
  }
  return failed ? -1 : 0;
}

/* ---- running the program ------------------------------------------------------ */

struct outcome {
  int spawn_errno; /* != 0: the program could not start */
  int timed_out;
  int too_much_output;
  int status; /* waitpid status */
  char *out;
  size_t out_len;
};

static void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Reads what is available on fd: into *buf (growing, up to max) or, when buf is
 * NULL, to our stderr. Returns 1 while open, 0 at EOF, -1 when over max. */
static int pump_out(int fd, char **buf, size_t *len, size_t *cap, size_t max) {
  char chunk[65536];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0) return errno == EINTR ? 1 : (errno == EAGAIN ? 1 : 0);
    if (n == 0) return 0;
    if (buf == NULL) {
      fwrite(chunk, 1, (size_t)n, stderr);
      fflush(stderr);
      continue;
    }
    if (*len + (size_t)n > max) return -1;
    if (*len + (size_t)n > *cap) {
      size_t c = *cap ? *cap * 2 : 65536;
      while (c < *len + (size_t)n) c *= 2;
      char *p = realloc(*buf, c);
      if (p == NULL) return -1;
      *buf = p;
      *cap = c;
    }
    memcpy(*buf + *len, chunk, (size_t)n);
    *len += (size_t)n;
  }
}

/* Closes both ends of a pipe, keeping errno (a later message reports it). */
static void close_pair(const int fds[2]) {
  int saved = errno;
  close(fds[0]);
  close(fds[1]);
  errno = saved;
}

static int run(char **argv, char **envp, const char *input, size_t input_len, size_t max_output,
               int timeout_ms, struct outcome *o) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return -1;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close_pair(in);
    return -1;
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close_pair(in);
    close_pair(out);
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults, none;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    o->spawn_errno = rc;
    close(in[1]);
    close(out[0]);
    close(err[0]);
    return 0;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  set_nonblocking(in[1]);
  set_nonblocking(out[0]);
  set_nonblocking(err[0]);
  int in_fd = input_len > 0 ? in[1] : -1;
  if (in_fd < 0) close(in[1]);
  int out_fd = out[0], err_fd = err[0];
  size_t written = 0, out_cap = 0;
  long long deadline = now_ms() + timeout_ms;
  int exited = 0;
  while (!exited || out_fd >= 0 || err_fd >= 0) {
    struct pollfd fds[4];
    int n = 0;
    int i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
    if (in_fd >= 0) fds[i_in = n++] = (struct pollfd){.fd = in_fd, .events = POLLOUT};
    if (out_fd >= 0) fds[i_out = n++] = (struct pollfd){.fd = out_fd, .events = POLLIN};
    if (err_fd >= 0) fds[i_err = n++] = (struct pollfd){.fd = err_fd, .events = POLLIN};
    if (!exited && pidfd >= 0) fds[i_pid = n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
    long long left = deadline - now_ms();
    if (left <= 0) {
      o->timed_out = 1;
      break;
    }
    int wait = (int)left;
    if (!exited && pidfd < 0 && wait > 20) wait = 20; /* no pidfd: poll for the exit */
    if (exited && wait > 100) wait = 100;             /* a grandchild may hold the pipes open */
    int ready = poll(fds, (nfds_t)n, wait);
    if (ready < 0 && errno != EINTR) break;
    if (i_in >= 0 && fds[i_in].revents != 0) {
      ssize_t w = write(in_fd, input + written, input_len - written);
      if (w > 0) written += (size_t)w;
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input_len) {
        close(in_fd); /* done, or the program stopped reading (EPIPE): not an error */
        in_fd = -1;
      }
    }
    if (i_out >= 0 && fds[i_out].revents != 0) {
      int r = pump_out(out_fd, &o->out, &o->out_len, &out_cap, max_output);
      if (r < 0) {
        o->too_much_output = 1;
        break;
      }
      if (r == 0) {
        close(out_fd);
        out_fd = -1;
      }
    }
    if (i_err >= 0 && fds[i_err].revents != 0 && pump_out(err_fd, NULL, NULL, NULL, 0) == 0) {
      close(err_fd);
      err_fd = -1;
    }
    if (!exited && (pidfd < 0 || (i_pid >= 0 && fds[i_pid].revents != 0))) {
      if (waitpid(pid, &o->status, WNOHANG) == pid) exited = 1;
    }
    if (exited && ready == 0) break; /* exited, and the pipes stayed quiet */
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &o->status, 0);
  }
  if (out_fd >= 0 && !o->too_much_output && !o->timed_out) {
    if (pump_out(out_fd, &o->out, &o->out_len, &out_cap, max_output) < 0) o->too_much_output = 1;
  }
  if (err_fd >= 0) (void)pump_out(err_fd, NULL, NULL, NULL, 0);
  if (in_fd >= 0) close(in_fd);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0) close(err_fd);
  if (pidfd >= 0) close(pidfd);
  return 0;
}

static int answer(int client, char **argv, const struct outcome *o, size_t max_output,
                  int timeout_ms) {
  char msg[512];
  if (o->spawn_errno != 0) {
    snprintf(msg, sizeof msg, "cannot run %s: %s", argv[0], strerror(o->spawn_errno));
    logf_("%s", msg);
    faas_respond_error(client, 500, msg);
    return 1;
  }
  if (o->timed_out) {
    snprintf(msg, sizeof msg, "%s did not finish within %d ms", argv[0], timeout_ms);
    logf_("%s", msg);
    faas_respond_error(client, 504, msg);
    return 1;
  }
  if (o->too_much_output) {
    snprintf(msg, sizeof msg, "%s wrote more than %zu bytes", argv[0], max_output);
    logf_("%s", msg);
    faas_respond_error(client, 500, msg);
    return 1;
  }
  if (WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0) {
    const char *type = getenv("FAAS_STDIO_CONTENT_TYPE");
    if (type == NULL || type[0] == '\0') type = DEFAULT_CONTENT_TYPE;
    if (faas_respond(client, 200, type, o->out, o->out_len) != 0) {
      logf_("cannot send the answer: %s", strerror(errno));
      return 1;
    }
    return 0;
  }
  if (WIFSIGNALED(o->status)) {
    snprintf(msg, sizeof msg, "%s was killed by signal %d", argv[0], WTERMSIG(o->status));
  } else {
    snprintf(msg, sizeof msg, "%s exited with status %d", argv[0], WEXITSTATUS(o->status));
  }
  logf_("%s", msg);
  faas_respond_error(client, 500, msg);
  return 1;
}

/* What every request of this process is served with. */
struct settings {
  size_t max_output;
  int timeout_ms;
  struct faas_limits limits;
};

static void read_settings(struct settings *s) {
  s->max_output = env_size("FAAS_STDIO_MAX_OUTPUT", DEFAULT_MAX_OUTPUT);
  /* faasd passes its run timeout; answering a little before it gives the client a 504. */
  size_t budget = env_size("FAAS_TIMEOUT_MS", 0);
  size_t timeout =
      env_size("FAAS_STDIO_TIMEOUT_MS", budget > 0 ? budget * 5 / 6 : DEFAULT_TIMEOUT_MS);
  s->timeout_ms = timeout > 3600000 ? 3600000 : (int)timeout;
  memset(&s->limits, 0, sizeof s->limits);
  s->limits.max_body = env_size("FAAS_STDIO_MAX_BODY", DEFAULT_MAX_BODY);
}

/* Serves one client by running the program, and closes it. Returns the exit status. */
static int serve_client(int client, char **argv, const struct settings *s) {
  char err[FAAS_ERR_MAX];
  struct faas_request req;
  int status = faas_read_request(client, &req, &s->limits, err, sizeof err);
  if (status != 0) {
    logf_("%s", err);
    if (status > 0) faas_respond_error(client, status, err);
    faas_close(client);
    return status > 0 ? 0 : 1;
  }
  struct strv env = {0};
  int exit_status = 1;
  if (build_env(client, &req, &env) != 0) {
    logf_("out of memory");
    faas_respond_error(client, 500, "out of memory");
  } else {
    struct outcome o = {0};
    if (run(argv, env.items, req.body, req.body_len, s->max_output, s->timeout_ms, &o) != 0) {
      logf_("cannot create pipes: %s", strerror(errno));
      faas_respond_error(client, 500, "cannot create pipes");
    } else {
      exit_status = answer(client, argv, &o, s->max_output, s->timeout_ms);
    }
    free(o.out);
  }
  for (size_t i = 0; i < env.len; i++) free(env.items[i]);
  free(env.items);
  faas_request_free(&req);
  faas_close(client);
  return exit_status;
}

int main(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(kUsage, stdout);
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  struct settings settings;
  read_settings(&settings);
  int uses = faas_reuse();
  int exit_status = 1;
  for (int served = 0; served < uses; served++) {
    char err[FAAS_ERR_MAX];
    int client = faas_accept(err, sizeof err);
    if (client < 0) {
      /* faasd stops listening once it has handed this container all its clients. */
      if (served > 0 && (errno == ECONNREFUSED || errno == ENOENT)) break;
      logf_("%s", err);
      return 1;
    }
    if (argc < 2) { /* answer anyway: the client learns what is wrong */
      fputs(kUsage, stderr);
      faas_respond_error(client, 500,
                         "faas-stdio: no program given (CMD [\"/faas-stdio\", PROGRAM, ARG...])");
      faas_close(client);
      return 1;
    }
    exit_status = serve_client(client, argv + 1, &settings);
  }
  return exit_status;
}
