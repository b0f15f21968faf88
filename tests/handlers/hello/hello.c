/* The smallest useful handler: take the client socket from faasd and answer
 * "Hello from FaaS handler!" with the request line echoed back. It reads no
 * further than the end of the header block and answers whatever it got. */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;

  char request[8192];
  size_t used = 0;
  while (used < sizeof request - 1 && !memmem(request, used, "\r\n\r\n", 4)) {
    ssize_t n = read(client, request + used, sizeof request - 1 - used);
    if (n <= 0) break;
    used += (size_t)n;
  }
  request[used] = '\0';
  char *eol = strstr(request, "\r\n");
  if (eol) *eol = '\0';

  char body[8400];
  int body_len = snprintf(body, sizeof body, "Hello from FaaS handler!\n\nRequest: %s\n", request);
  if (faas_respond(client, 200, "OK", "text/plain", body, (size_t)body_len) != 0) return 1;
  close(client);
  return 0;
}
