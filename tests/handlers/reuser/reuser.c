/* reuser: serves up to FAAS_REUSE clients in turn, as `faas new --reuse N` allows:
 * takes a client, answers it, closes it, and connects to /control.sock again for the
 * next one; a refused connect means faasd has no more for this container. Answers
 *
 *   served=N     how many clients this process has received, this one included
 *   id=HEX       random, one per process: tells containers apart
 *   reuse=R      FAAS_REUSE as the container sees it
 *   version=V    $VERSION (deploy with --env VERSION=... to tell deploys apart)
 */
#include "faas_handler.h"

#include <sys/random.h>

int main(void) {
  static struct faas_request req;
  const char *reuse_env = getenv("FAAS_REUSE");
  const char *version = getenv("VERSION");
  int reuse = reuse_env ? atoi(reuse_env) : 1;
  unsigned long long id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) return 1;
  for (int served = 1; served <= (reuse > 0 ? reuse : 1); served++) {
    int fd = faas_receive_client();
    if (fd < 0) return served > 1 ? 0 : 1;
    if (faas_read_request(fd, &req, 0) != 0) return 1;
    free(req.body);
    char body[160];
    int len = snprintf(body, sizeof body, "served=%d\nid=%016llx\nreuse=%s\nversion=%s\n", served,
                       id, reuse_env ? reuse_env : "", version ? version : "");
    faas_respond(fd, 200, "OK", "text/plain", body, (size_t)len);
    close(fd);
  }
  return 0;
}
