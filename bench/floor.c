/* floor: the lower bounds faasd's request path is measured against.
 *
 *   floor spawn [-n MAX] [-t SECONDS] -- PROGRAM [ARG...]
 *       posix_spawn PROGRAM and wait for it, MAX times in a row.
 *   floor runc [-n MAX] [-t SECONDS] [-j WORKERS] -T TEMPLATE -w WORKDIR [-r RUNTIME]
 *       one bare `runc run` per request, doing what faasd does for a connection:
 *       a TCP connection over 127.0.0.1 carrying a GET, a bundle directory with
 *       config.json and a listening control.sock, `runc run`, the handler's
 *       connect, the server end of the TCP connection sent over with SCM_RIGHTS
 *       and the payload "SOCKET", the response read to EOF, runc's exit, the
 *       bundle removed. WORKERS threads do this back to back.
 *
 * TEMPLATE is faasd's config.json with "@BUNDLE@" where the bundle directory goes
 * (the control socket's bind-mount source) and "@ID@" where a per-run name goes
 * (cgroupsPath). Loops end after MAX runs or SECONDS, whichever comes first.
 *
 * Prints one JSON object: the microsecond samples of the runs that succeeded
 * (to_exit_us: until the program's or runc's exit; runc mode also to_response_us:
 * until the response's EOF), the count of failures, the workers and the elapsed
 * time. Each failure is described on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { kMaxWorkers = 64, kConnectTimeoutMs = 5000, kRunTimeoutMs = 30000 };

static const char kRequest[] = "GET / HTTP/1.1\r\nHost: floor\r\nConnection: close\r\n\r\n";

struct Options {
  const char *mode;
  long max_runs;
  double seconds;
  int workers;
  const char *template_path;
  const char *workdir;
  const char *runtime;
  char **argv; /* spawn mode: the program and its arguments */
};

struct Shared {
  const struct Options *options;
  char *config_template;
  atomic_long next_run;
  int64_t deadline_ns;
};

struct Worker {
  struct Shared *shared;
  int index;
  int tcp_listener;
  long done;
  long failed;
  int64_t *to_response_us;
  int64_t *to_exit_us;
};

static int64_t NowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int MsLeft(int64_t deadline_ns) {
  int64_t left = (deadline_ns - NowNs()) / 1000000;
  return left < 0 ? 0 : (int)left;
}

static bool TakeRun(struct Shared *shared) {
  if (NowNs() >= shared->deadline_ns) return false;
  return atomic_fetch_add(&shared->next_run, 1) < shared->options->max_runs;
}

/* posix_spawn with stdin and stdout on /dev/null; stderr stays ours. Every other fd
 * of this process is O_CLOEXEC. Returns the pid, or -1 with errno set. */
static pid_t Spawn(char *const argv[], bool use_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int err = use_path ? posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ)
                     : posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return pid;
}

static int WaitExit(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return status;
}

/* ---- spawn mode ------------------------------------------------------------------ */

static void *SpawnWorker(void *arg) {
  struct Worker *w = arg;
  while (TakeRun(w->shared)) {
    int64_t start = NowNs();
    pid_t pid = Spawn(w->shared->options->argv, true);
    int status = pid < 0 ? -1 : WaitExit(pid);
    if (pid < 0 || status != 0) {
      fprintf(stderr, "floor: %s: %s\n", w->shared->options->argv[0],
              pid < 0 ? strerror(errno) : "exited with an error");
      w->failed++;
      continue;
    }
    w->to_exit_us[w->done++] = (NowNs() - start) / 1000;
  }
  return NULL;
}

/* ---- runc mode ------------------------------------------------------------------- */

struct Run {
  char id[96];
  char bundle[4096];
  char control_path[4200];
  int client;
  int server;
  int control;
  pid_t runc;
  int pidfd;
};

static int ListenTcp(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0) {
    perror("floor: listen on 127.0.0.1");
    exit(1);
  }
  return fd;
}

static int ConnectPair(int listener, int *server) {
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  if (getsockname(listener, (struct sockaddr *)&addr, &len) != 0) return -1;
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0) return -1;
  if (connect(client, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      send(client, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof kRequest - 1)) {
    close(client);
    return -1;
  }
  *server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (*server < 0) {
    close(client);
    return -1;
  }
  return client;
}

/* Copies the template with @BUNDLE@ and @ID@ replaced into DIR/config.json. */
static int WriteConfig(const char *template, const struct Run *run) {
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", run->bundle);
  FILE *out = fopen(path, "wxe");
  if (out == NULL) return -1;
  for (const char *p = template; *p;) {
    if (strncmp(p, "@BUNDLE@", 8) == 0) {
      fputs(run->bundle, out);
      p += 8;
    } else if (strncmp(p, "@ID@", 4) == 0) {
      fputs(run->id, out);
      p += 4;
    } else {
      fputc(*p++, out);
    }
  }
  return fclose(out);
}

static int ListenUnix(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (fd < 0 || strlen(path) >= sizeof addr.sun_path) return -1;
  strcpy(addr.sun_path, path);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int SendFd(int sock, int fd) {
  char payload[] = "SOCKET";
  char cbuf[CMSG_SPACE(sizeof(int))];
  memset(cbuf, 0, sizeof cbuf);
  struct iovec iov = {payload, 6};
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 6 ? 0 : -1;
}

/* Waits until fd is readable; 0 when it is, -1 on timeout or error. */
static int WaitReadable(int fd, int64_t deadline_ns) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  for (;;) {
    int n = poll(&p, 1, MsLeft(deadline_ns));
    if (n > 0) return 0;
    if (n == 0 || errno != EINTR) return -1;
  }
}

/* Waits for the handler's connect on control.sock (or runc's early exit). */
static int AcceptHandler(struct Run *run) {
  int64_t deadline = NowNs() + (int64_t)kConnectTimeoutMs * 1000000;
  struct pollfd p[2] = {{.fd = run->control, .events = POLLIN},
                        {.fd = run->pidfd, .events = POLLIN}};
  for (;;) {
    int n = poll(p, 2, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || (p[1].revents & POLLIN)) return -1;
    return accept4(run->control, NULL, NULL, SOCK_CLOEXEC);
  }
}

/* Reads the response to EOF; 0 when it began with a 200 status line. */
static int ReadResponse(int fd) {
  int64_t deadline = NowNs() + (int64_t)kRunTimeoutMs * 1000000;
  char head[16] = {0};
  size_t got = 0;
  char buf[8192];
  for (;;) {
    if (WaitReadable(fd, deadline) != 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    size_t copy = (size_t)n < sizeof head - 1 - got ? (size_t)n : sizeof head - 1 - got;
    memcpy(head + got, buf, copy);
    got += copy;
  }
  return strncmp(head, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
}

static void CloseFd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void RemoveBundle(const struct Run *run) {
  char path[4300];
  snprintf(path, sizeof path, "%s/config.json", run->bundle);
  unlink(path);
  unlink(run->control_path);
  rmdir(run->bundle);
}

/* After a failure: stop runc, reap it, and remove what it left. */
static void Abandon(struct Run *run, const struct Options *options) {
  if (run->runc > 0) {
    kill(run->runc, SIGKILL);
    WaitExit(run->runc);
    char root[4200];
    snprintf(root, sizeof root, "%s/runc-root", options->workdir);
    char *argv[] = {(char *)options->runtime, "--root", root, "delete", "--force", run->id, NULL};
    pid_t pid = Spawn(argv, false);
    if (pid > 0) WaitExit(pid);
    run->runc = -1;
  }
}

static int StartRunc(struct Run *run, const struct Options *options) {
  char root[4200];
  snprintf(root, sizeof root, "%s/runc-root", options->workdir);
  char *argv[] = {
      (char *)options->runtime, "--root", root, "run", "--bundle", run->bundle, run->id, NULL};
  run->runc = Spawn(argv, false);
  if (run->runc < 0) return -1;
  run->pidfd = (int)syscall(SYS_pidfd_open, run->runc, 0);
  return run->pidfd < 0 ? -1 : 0;
}

/* One request's worth of work. Returns 0 and the two durations, or -1 with a reason. */
static int RuncOnce(struct Worker *w, long seq, int64_t *to_response, int64_t *to_exit,
                    const char **why) {
  const struct Options *options = w->shared->options;
  struct Run run = {.client = -1, .server = -1, .control = -1, .runc = -1, .pidfd = -1};
  snprintf(run.id, sizeof run.id, "floor-%d-%d-%ld", (int)getpid(), w->index, seq);
  snprintf(run.bundle, sizeof run.bundle, "%s/bundles/%s", options->workdir, run.id);
  snprintf(run.control_path, sizeof run.control_path, "%s/control.sock", run.bundle);
  int handler = -1;
  int result = -1;
  int64_t start = NowNs();

  run.client = ConnectPair(w->tcp_listener, &run.server);
  if (run.client < 0) {
    *why = "tcp connection";
  } else if (mkdir(run.bundle, 0700) != 0) {
    *why = "mkdir bundle";
  } else if ((run.control = ListenUnix(run.control_path)) < 0) {
    *why = "listen on control.sock";
  } else if (WriteConfig(w->shared->config_template, &run) != 0) {
    *why = "write config.json";
  } else if (StartRunc(&run, options) != 0) {
    *why = "spawn runc";
  } else if ((handler = AcceptHandler(&run)) < 0) {
    *why = "handler did not connect";
  } else if (SendFd(handler, run.server) != 0) {
    *why = "send the socket";
  } else {
    CloseFd(&handler);
    CloseFd(&run.server);
    CloseFd(&run.control);
    if (ReadResponse(run.client) != 0) {
      *why = "response";
    } else {
      *to_response = NowNs() - start;
      int64_t deadline = NowNs() + (int64_t)kRunTimeoutMs * 1000000;
      if (WaitReadable(run.pidfd, deadline) != 0) {
        *why = "runc did not exit";
      } else {
        int status = WaitExit(run.runc);
        run.runc = -1;
        *to_exit = NowNs() - start;
        result = status == 0 ? 0 : -1;
        if (result != 0) *why = "runc exited with an error";
      }
    }
  }
  if (result != 0) Abandon(&run, options);
  CloseFd(&handler);
  CloseFd(&run.client);
  CloseFd(&run.server);
  CloseFd(&run.control);
  CloseFd(&run.pidfd);
  RemoveBundle(&run);
  return result;
}

static void *RuncWorker(void *arg) {
  struct Worker *w = arg;
  w->tcp_listener = ListenTcp();
  for (long seq = 0; TakeRun(w->shared); seq++) {
    int64_t to_response = 0, to_exit = 0;
    const char *why = "";
    if (RuncOnce(w, seq, &to_response, &to_exit, &why) != 0) {
      fprintf(stderr, "floor: run %d/%ld: %s\n", w->index, seq, why);
      w->failed++;
      continue;
    }
    w->to_response_us[w->done] = to_response / 1000;
    w->to_exit_us[w->done] = to_exit / 1000;
    w->done++;
  }
  close(w->tcp_listener);
  return NULL;
}

/* ---- main ------------------------------------------------------------------------- */

static char *ReadFile(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  char *text = fstat(fd, &st) == 0 ? malloc((size_t)st.st_size + 1) : NULL;
  size_t len = 0;
  while (text != NULL && len < (size_t)st.st_size) {
    ssize_t n = read(fd, text + len, (size_t)st.st_size - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
  }
  close(fd);
  if (text != NULL) text[len] = '\0';
  return text;
}

static void Usage(void) {
  fputs(
      "usage: floor spawn [-n MAX] [-t SECONDS] -- PROGRAM [ARG...]\n"
      "       floor runc [-n MAX] [-t SECONDS] [-j WORKERS] -T TEMPLATE -w WORKDIR"
      " [-r RUNTIME]\n",
      stderr);
  exit(2);
}

static void ParseArgs(int argc, char **argv, struct Options *o) {
  if (argc < 2) Usage();
  *o = (struct Options){
      .mode = argv[1], .max_runs = 200, .seconds = 60, .workers = 1, .runtime = "/usr/sbin/runc"};
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "+n:t:j:T:w:r:")) != -1) {
    switch (opt) {
      case 'n':
        o->max_runs = atol(optarg);
        break;
      case 't':
        o->seconds = atof(optarg);
        break;
      case 'j':
        o->workers = atoi(optarg);
        break;
      case 'T':
        o->template_path = optarg;
        break;
      case 'w':
        o->workdir = optarg;
        break;
      case 'r':
        o->runtime = optarg;
        break;
      default:
        Usage();
    }
  }
  bool spawn = strcmp(o->mode, "spawn") == 0;
  if (spawn && optind < argc) o->argv = argv + optind;
  if (o->max_runs < 1 || o->seconds <= 0 || o->workers < 1 || o->workers > kMaxWorkers) Usage();
  if (spawn ? o->argv == NULL : (strcmp(o->mode, "runc") != 0 || !o->template_path || !o->workdir))
    Usage();
}

static void PrintSamples(const char *key, struct Worker *workers, int n, bool exit_times) {
  printf("  \"%s\": [", key);
  const char *sep = "";
  for (int i = 0; i < n; i++)
    for (long k = 0; k < workers[i].done; k++) {
      printf("%s%lld", sep,
             (long long)(exit_times ? workers[i].to_exit_us[k] : workers[i].to_response_us[k]));
      sep = ",";
    }
  printf("],\n");
}

int main(int argc, char **argv) {
  struct Options options;
  ParseArgs(argc, argv, &options);
  signal(SIGPIPE, SIG_IGN);
  bool spawn = strcmp(options.mode, "spawn") == 0;
  struct Shared shared = {.options = &options};
  if (!spawn) {
    shared.config_template = ReadFile(options.template_path);
    if (shared.config_template == NULL) {
      perror(options.template_path);
      return 1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/bundles", options.workdir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      perror(dir);
      return 1;
    }
  }
  struct Worker workers[kMaxWorkers];
  pthread_t threads[kMaxWorkers];
  int64_t start = NowNs();
  shared.deadline_ns = start + (int64_t)(options.seconds * 1e9);
  for (int i = 0; i < options.workers; i++) {
    workers[i] = (struct Worker){.shared = &shared, .index = i};
    workers[i].to_response_us = calloc((size_t)options.max_runs, sizeof(int64_t));
    workers[i].to_exit_us = calloc((size_t)options.max_runs, sizeof(int64_t));
    if (!workers[i].to_response_us || !workers[i].to_exit_us) return 1;
    if (pthread_create(&threads[i], NULL, spawn ? SpawnWorker : RuncWorker, &workers[i]) != 0) {
      fputs("floor: cannot start a thread\n", stderr);
      return 1;
    }
  }
  long done = 0, failed = 0;
  for (int i = 0; i < options.workers; i++) {
    pthread_join(threads[i], NULL);
    done += workers[i].done;
    failed += workers[i].failed;
  }
  double elapsed = (double)(NowNs() - start) / 1e9;
  printf("{\n  \"mode\": \"%s\",\n  \"workers\": %d,\n", options.mode, options.workers);
  printf("  \"elapsed_s\": %.6f,\n  \"ok\": %ld,\n  \"failed\": %ld,\n", elapsed, done, failed);
  if (!spawn) PrintSamples("to_response_us", workers, options.workers, false);
  PrintSamples("to_exit_us", workers, options.workers, true);
  printf("  \"max_runs\": %ld,\n  \"seconds\": %g\n}\n", options.max_runs, options.seconds);
  return 0;
}
