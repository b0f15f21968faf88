/* inspect: takes the client socket and answers with facts about its own sandbox,
 * one "key=value" line each, for tests of the container contract:
 * pid, uid, hostname, capabilities, no_new_privs, whether / and /tmp are writable,
 * network interfaces, the nofile limit and FAAS_CONTROL_SOCKET. */
#include "faas_handler.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/utsname.h>

static void status_field(const char *key, char *out, size_t len) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return;
  char line[256];
  size_t klen = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      char *v = line + klen + 1;
      while (*v == ' ' || *v == '\t') v++;
      v[strcspn(v, "\n")] = '\0';
      snprintf(out, len, "%s", v);
      break;
    }
  }
  fclose(f);
}

static const char *try_create(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return strerror(errno);
  close(fd);
  unlink(path);
  return "ok";
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 1 << 20) != 0) return 1;

  static char body[8192];
  size_t n = 0;
#define ADD(...) n += (size_t)snprintf(body + n, sizeof body - n, __VA_ARGS__)
  struct utsname u;
  uname(&u);
  char cap_eff[64], cap_bnd[64], nnp[16];
  status_field("CapEff", cap_eff, sizeof cap_eff);
  status_field("CapBnd", cap_bnd, sizeof cap_bnd);
  status_field("NoNewPrivs", nnp, sizeof nnp);
  struct rlimit nofile;
  getrlimit(RLIMIT_NOFILE, &nofile);
  const char *control = getenv("FAAS_CONTROL_SOCKET");
  ADD("pid=%d\n", (int)getpid());
  ADD("uid=%d\n", (int)getuid());
  ADD("hostname=%s\n", u.nodename);
  ADD("cap_eff=%s\n", cap_eff);
  ADD("cap_bnd=%s\n", cap_bnd);
  ADD("no_new_privs=%s\n", nnp);
  ADD("write_root=%s\n", try_create("/probe"));
  ADD("write_tmp=%s\n", try_create("/tmp/probe"));
  ADD("nofile=%llu\n", (unsigned long long)nofile.rlim_cur);
  ADD("control_socket=%s\n", control ? control : "");
  ADD("interfaces=");
  FILE *dev = fopen("/proc/net/dev", "r");
  if (dev) {
    char line[512];
    int i = 0;
    while (fgets(line, sizeof line, dev)) {
      if (++i <= 2) continue;  /* headers */
      char *colon = strchr(line, ':');
      if (!colon) continue;
      *colon = '\0';
      char *name = line;
      while (*name == ' ') name++;
      ADD("%s%s", i > 3 ? "," : "", name);
    }
    fclose(dev);
  }
  ADD("\n");
  faas_respond(client, 200, "OK", "text/plain", body, n);
  return 0;
}
