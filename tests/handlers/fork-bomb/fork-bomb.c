/* fork-bomb: takes the client, then tries to exhaust the process table.
 *
 *   GET /count  forks children that pause, until fork() fails; answers
 *               "forked=N error=ENAME\n" (the pids limit is N + 1: pid 1 counts).
 *   GET /bomb   every process forks forever and nobody answers: only the run
 *               timeout (and `runc delete --force`) can end it.
 *
 * The client socket is inherited by every child, so the connection stays open
 * until the last process of the container is gone. */
#include "faas_handler.h"

#include <errno.h>
#include <signal.h>

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;

  if (strncmp(req.head, "GET /bomb ", 10) == 0) {
    for (;;) (void)fork();
  }

  int forked = 0, err = 0;
  while (forked < 100000) {
    pid_t pid = fork();
    if (pid == 0) {
      for (;;) pause();
    }
    if (pid < 0) {
      err = errno;
      break;
    }
    forked++;
  }
  char body[128];
  const char *name = err ? strerrorname_np(err) : "none";
  int n = snprintf(body, sizeof body, "forked=%d error=%s\n", forked, name ? name : "?");
  faas_respond(client, 200, "OK", "text/plain", body, (size_t)n);
  /* Exiting as pid 1 takes every child with it (the pid namespace goes). */
  return 0;
}
