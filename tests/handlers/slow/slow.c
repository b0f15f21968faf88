/* slow: takes the client, reads the request, sleeps SLEEP_MS milliseconds (from the
 * environment, e.g. `faas new --env SLEEP_MS=1500`; default 1000), then answers
 *
 *   slept=MS
 *   start_ms=T        wall clock (ms since the epoch) when the client arrived
 *   end_ms=T          wall clock just before answering
 *
 * so tests can tell whether two requests were served one after the other. */
#include "faas_handler.h"

#include <errno.h>
#include <time.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  long long start = now_ms();
  static struct faas_request req;
  if (faas_read_request(client, &req, 1 << 20) != 0) return 1;
  const char *env = getenv("SLEEP_MS");
  long ms = env ? strtol(env, NULL, 10) : 1000;
  if (ms < 0) ms = 0;
  struct timespec pause_for = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&pause_for, &pause_for) != 0 && errno == EINTR) continue;
  char body[128];
  int len =
      snprintf(body, sizeof body, "slept=%ld\nstart_ms=%lld\nend_ms=%lld\n", ms, start, now_ms());
  faas_respond(client, 200, "OK", "text/plain", body, (size_t)len);
  return 0;
}
