/* loadgen: a closed-loop HTTP/1.1 load client for one faasd function.
 *
 *   loadgen -a IP [-p PORT] [-c CLIENTS] [-n MAX] [-t SECONDS] [-R SOCKET -N NAME]
 *
 * CLIENTS threads each connect, send a GET with Connection: close, read the
 * response to EOF and start over, until MAX requests were started in total or
 * SECONDS have passed. Each request's latency is the client round trip: from
 * connect() to EOF.
 *
 * With -R and -N (one client only), before each request the client polls faasd's
 * control API on SOCKET (GET /api/functions/NAME, what `faas describe NAME` asks)
 * every 2 ms for up to 5 s, until runtime.pool_ready >= 1, so every timed request
 * finds a ready container. The poll is not timed; a request sent after a poll that
 * timed out counts in not_ready, and after 3 such in a row the client gives up
 * (gave_up). A reply without pool_ready makes loadgen exit with status 3: that
 * faasd has no warm pool.
 *
 * Prints one JSON object: counts by outcome (ok = status 200; errors: connect,
 * io = reset/timeout/malformed, status = any other status, with a histogram by
 * status) and the latency of every ok request in microseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum {
  kMaxClients = 256,
  kConnectTimeoutMs = 5000,
  kRequestTimeoutMs = 30000,
  kReadyTimeoutMs = 5000,
  kReadyPollUs = 2000,
  kMaxNotReadyInARow = 3,
  kMaxStatus = 600,
};

static const char kRequest[] = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

struct Options {
  struct sockaddr_in target;
  int clients;
  long max_requests;
  double seconds;
  const char *ready_socket;
  const char *ready_name;
};

struct Shared {
  const struct Options *options;
  atomic_long next_request;
  int64_t deadline_ns;
};

struct Client {
  struct Shared *shared;
  long ok;
  long connect_errors;
  long io_errors;
  long not_ready;
  long statuses[kMaxStatus];
  int64_t *latency_us;
  bool no_pool;
  bool gave_up;
};

enum Outcome { kOk, kConnectError, kIoError, kStatus };

static int64_t NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int MsLeft(int64_t deadline_ns) {
  int64_t left = (deadline_ns - NowNs()) / 1000000;
  return left < 0 ? 0 : (int)left;
}

/* Waits for `events` on fd until the deadline; 0 when ready. */
static int WaitFor(int fd, short events, int64_t deadline_ns) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int n = poll(&p, 1, MsLeft(deadline_ns));
    if (n > 0) return 0;
    if (n == 0 || errno != EINTR) return -1;
  }
}

static int ConnectWithin(int fd, const struct sockaddr *addr, socklen_t len, int64_t deadline) {
  if (connect(fd, addr, len) == 0) return 0;
  if (errno != EINPROGRESS) return -1;
  if (WaitFor(fd, POLLOUT, deadline) != 0) return -1;
  int err = 0;
  socklen_t err_len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
  return err == 0 ? 0 : -1;
}

static int SendAll(int fd, const char *buf, size_t len, int64_t deadline) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (WaitFor(fd, POLLOUT, deadline) != 0) return -1;
      continue;
    }
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads to EOF, keeping the first `cap - 1` bytes in buf (NUL-terminated). */
static int ReadToEof(int fd, char *buf, size_t cap, int64_t deadline) {
  size_t kept = 0;
  char chunk[16384];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (WaitFor(fd, POLLIN, deadline) != 0) return -1;
      continue;
    }
    if (n < 0) return -1;
    if (n == 0) break;
    size_t copy = (size_t)n < cap - 1 - kept ? (size_t)n : cap - 1 - kept;
    memcpy(buf + kept, chunk, copy);
    kept += copy;
  }
  buf[kept] = '\0';
  return 0;
}

/* "HTTP/1.x NNN ..." -> NNN, or -1. */
static int ParseStatus(const char *head) {
  if (strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ') return -1;
  char *end;
  long status = strtol(head + 9, &end, 10);
  return end == head + 12 && status >= 100 && status < kMaxStatus ? (int)status : -1;
}

static enum Outcome OneRequest(const struct Options *o, int *status) {
  int64_t deadline = NowNs() + (int64_t)kConnectTimeoutMs * 1000000;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return kConnectError;
  if (ConnectWithin(fd, (const struct sockaddr *)&o->target, sizeof o->target, deadline) != 0) {
    close(fd);
    return kConnectError;
  }
  deadline = NowNs() + (int64_t)kRequestTimeoutMs * 1000000;
  char head[64];
  int io = SendAll(fd, kRequest, sizeof kRequest - 1, deadline);
  if (io == 0) io = ReadToEof(fd, head, sizeof head, deadline);
  close(fd);
  if (io != 0) return kIoError;
  *status = ParseStatus(head);
  if (*status < 0) return kIoError;
  return *status == 200 ? kOk : kStatus;
}

/* ---- waiting for a ready pooled container ------------------------------------------ */

/* pool_ready from GET /api/functions/NAME: >= 0, -1 when the reply has none, -2 on error. */
static long PoolReady(const struct Options *o) {
  int64_t deadline = NowNs() + 2000 * (int64_t)1000000;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", o->ready_socket);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    if (fd >= 0) close(fd);
    return -2;
  }
  char request[512];
  int len = snprintf(request, sizeof request,
                     "GET /api/functions/%s HTTP/1.1\r\nHost: faasd\r\nConnection: close\r\n\r\n",
                     o->ready_name);
  static __thread char reply[1 << 16];
  int io = SendAll(fd, request, (size_t)len, deadline);
  if (io == 0) io = ReadToEof(fd, reply, sizeof reply, deadline);
  close(fd);
  if (io != 0 || ParseStatus(reply) != 200) return -2;
  const char *key = strstr(reply, "\"pool_ready\"");
  if (key == NULL) return -1;
  key += strlen("\"pool_ready\"");
  while (*key == ' ' || *key == ':' || *key == '\n' || *key == '\t') key++;
  return strtol(key, NULL, 10);
}

/* Polls until a container is ready; false when it timed out (the request still runs). */
static bool WaitForReady(struct Client *c) {
  int64_t deadline = NowNs() + (int64_t)kReadyTimeoutMs * 1000000;
  for (;;) {
    long ready = PoolReady(c->shared->options);
    if (ready == -1) {
      c->no_pool = true;
      return false;
    }
    if (ready >= 1) return true;
    if (NowNs() >= deadline) return false;
    usleep(kReadyPollUs);
  }
}

/* ---- the clients -------------------------------------------------------------------- */

static bool TakeRequest(struct Shared *shared) {
  if (NowNs() >= shared->deadline_ns) return false;
  return atomic_fetch_add(&shared->next_request, 1) < shared->options->max_requests;
}

static void *RunClient(void *arg) {
  struct Client *c = arg;
  const struct Options *o = c->shared->options;
  int not_ready_in_a_row = 0;
  while (TakeRequest(c->shared)) {
    if (o->ready_socket != NULL) {
      if (WaitForReady(c)) {
        not_ready_in_a_row = 0;
      } else if (c->no_pool) {
        break;
      } else if (++not_ready_in_a_row > kMaxNotReadyInARow) {
        c->gave_up = true;
        break;
      } else {
        c->not_ready++;
      }
    }
    int status = 0;
    int64_t start = NowNs();
    enum Outcome outcome = OneRequest(o, &status);
    int64_t took = (NowNs() - start) / 1000;
    if (outcome == kOk) c->latency_us[c->ok++] = took;
    if (outcome == kConnectError) c->connect_errors++;
    if (outcome == kIoError) c->io_errors++;
    if (outcome == kOk || outcome == kStatus) c->statuses[status]++;
  }
  return NULL;
}

static void Usage(void) {
  fputs(
      "usage: loadgen -a IP [-p PORT] [-c CLIENTS] [-n MAX] [-t SECONDS]"
      " [-R SOCKET -N NAME]\n",
      stderr);
  exit(2);
}

static void ParseArgs(int argc, char **argv, struct Options *o) {
  *o = (struct Options){.clients = 1, .max_requests = 200, .seconds = 60};
  o->target.sin_family = AF_INET;
  o->target.sin_port = htons(80);
  bool have_address = false;
  int opt;
  while ((opt = getopt(argc, argv, "a:p:c:n:t:R:N:")) != -1) {
    switch (opt) {
      case 'a':
        have_address = inet_pton(AF_INET, optarg, &o->target.sin_addr) == 1;
        break;
      case 'p':
        o->target.sin_port = htons((uint16_t)atoi(optarg));
        break;
      case 'c':
        o->clients = atoi(optarg);
        break;
      case 'n':
        o->max_requests = atol(optarg);
        break;
      case 't':
        o->seconds = atof(optarg);
        break;
      case 'R':
        o->ready_socket = optarg;
        break;
      case 'N':
        o->ready_name = optarg;
        break;
      default:
        Usage();
    }
  }
  if (!have_address || o->clients < 1 || o->clients > kMaxClients || o->max_requests < 1 ||
      o->seconds <= 0 || (o->ready_socket == NULL) != (o->ready_name == NULL) ||
      (o->ready_socket != NULL && o->clients != 1))
    Usage();
}

static void PrintJson(const struct Options *o, struct Client *clients, double elapsed) {
  long ok = 0, connect_errors = 0, io_errors = 0, not_ready = 0, statuses[kMaxStatus] = {0};
  bool gave_up = false;
  for (int i = 0; i < o->clients; i++) {
    gave_up |= clients[i].gave_up;
    ok += clients[i].ok;
    connect_errors += clients[i].connect_errors;
    io_errors += clients[i].io_errors;
    not_ready += clients[i].not_ready;
    for (int s = 0; s < kMaxStatus; s++) statuses[s] += clients[i].statuses[s];
  }
  long other_status = -ok;
  printf("{\n  \"clients\": %d,\n  \"elapsed_s\": %.6f,\n  \"ok\": %ld,\n", o->clients, elapsed,
         ok);
  printf("  \"statuses\": {");
  const char *sep = "";
  for (int s = 0; s < kMaxStatus; s++) {
    if (statuses[s] == 0) continue;
    printf("%s\"%d\": %ld", sep, s, statuses[s]);
    other_status += statuses[s];
    sep = ", ";
  }
  printf("},\n  \"errors\": {\"connect\": %ld, \"io\": %ld, \"status\": %ld},\n", connect_errors,
         io_errors, other_status);
  printf("  \"not_ready\": %ld,\n  \"gave_up\": %s,\n  \"latency_us\": [", not_ready,
         gave_up ? "true" : "false");
  sep = "";
  for (int i = 0; i < o->clients; i++)
    for (long k = 0; k < clients[i].ok; k++) {
      printf("%s%lld", sep, (long long)clients[i].latency_us[k]);
      sep = ",";
    }
  printf("],\n  \"max_requests\": %ld,\n  \"seconds\": %g\n}\n", o->max_requests, o->seconds);
}

int main(int argc, char **argv) {
  struct Options options;
  ParseArgs(argc, argv, &options);
  signal(SIGPIPE, SIG_IGN);
  struct Shared shared = {.options = &options};
  static struct Client clients[kMaxClients];
  pthread_t threads[kMaxClients];
  int64_t start = NowNs();
  shared.deadline_ns = start + (int64_t)(options.seconds * 1e9);
  for (int i = 0; i < options.clients; i++) {
    clients[i].shared = &shared;
    clients[i].latency_us = calloc((size_t)options.max_requests, sizeof(int64_t));
    if (clients[i].latency_us == NULL ||
        pthread_create(&threads[i], NULL, RunClient, &clients[i]) != 0) {
      fputs("loadgen: cannot start a client\n", stderr);
      return 1;
    }
  }
  bool no_pool = false;
  for (int i = 0; i < options.clients; i++) {
    pthread_join(threads[i], NULL);
    no_pool |= clients[i].no_pool;
  }
  if (no_pool) {
    fputs("loadgen: faasd reports no runtime.pool_ready for this function\n", stderr);
    return 3;
  }
  PrintJson(&options, clients, (double)(NowNs() - start) / 1e9);
  return 0;
}
