/* log-flood: takes the client, writes FLOOD_BYTES (default 50 MiB) of output, then
 * answers "flooded stdout=N stderr=M\n". Half goes to stdout as 1000-byte lines of
 * 'o' (999 + newline), half to stderr as one endless line of 'e' without a newline.
 * faasd must log at most its per-request cap of it and keep draining the rest. */
#include "faas_handler.h"

#include <errno.h>

static size_t write_out(int fd, size_t total, char fill, int newlines) {
  static char buf[64 * 1000];
  memset(buf, fill, sizeof buf);
  if (newlines) {
    for (size_t i = 999; i < sizeof buf; i += 1000) buf[i] = '\n';
  }
  size_t done = 0;
  while (done < total) {
    size_t want = total - done < sizeof buf ? total - done : sizeof buf;
    ssize_t n = write(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += (size_t)n;
  }
  return done;
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  const char *env = getenv("FLOOD_BYTES");
  size_t total = env ? strtoull(env, NULL, 10) : (size_t)50 << 20;
  size_t out = write_out(1, total / 2, 'o', 1);
  size_t err = write_out(2, total - total / 2, 'e', 0);
  char body[128];
  int n = snprintf(body, sizeof body, "flooded stdout=%zu stderr=%zu\n", out, err);
  faas_respond(client, 200, "OK", "text/plain", body, (size_t)n);
  return 0;
}
