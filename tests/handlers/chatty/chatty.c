/* chatty: takes the client, writes "out PATH" to stdout and "err PATH" to stderr,
 * answers "ok PATH\n" and exits. The path picks extras:
 *   /bin-...   stdout also gets a line with an escape sequence and an invalid byte
 *   /exit3-... exits with status 3 after answering */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  char path[256] = "";
  const char *space = memchr(req.head, ' ', req.head_len);
  if (space) sscanf(space + 1, "%255s", path);
  printf("out %s\n", path);
  if (strncmp(path, "/bin-", 5) == 0) printf("bin \x1b[31mred\xff end\n");
  fflush(stdout);
  fprintf(stderr, "err %s\n", path);
  char body[300];
  int n = snprintf(body, sizeof body, "ok %s\n", path);
  faas_respond(client, 200, "OK", "text/plain", body, (size_t)n);
  close(client);
  return strncmp(path, "/exit3-", 7) == 0 ? 3 : 0;
}
