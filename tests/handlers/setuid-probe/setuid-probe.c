/* setuid-probe: says who it runs as, to check what a setuid bit in an image buys.
 *
 *   setuid-probe whoami   (run on the host) prints "uid=R euid=E gid=R egid=E\n"
 *   as a handler          answers the same line for the container
 */
#include "faas_handler.h"

static int who(char *buf, size_t len) {
  return snprintf(buf, len, "uid=%d euid=%d gid=%d egid=%d\n", (int)getuid(), (int)geteuid(),
                  (int)getgid(), (int)getegid());
}

int main(int argc, char **argv) {
  char line[128];
  int n = who(line, sizeof line);
  if (argc > 1 && strcmp(argv[1], "whoami") == 0) {
    fputs(line, stdout);
    return 0;
  }
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  faas_respond(client, 200, "OK", "text/plain", line, (size_t)n);
  return 0;
}
