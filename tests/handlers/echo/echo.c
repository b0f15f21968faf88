/* echo: answers 200 with the request body as the response body (up to 64 MiB),
 * with Content-Length. */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 64u << 20) != 0) {
    const char msg[] = "bad request\n";
    faas_respond(client, 400, "Bad Request", "text/plain", msg, sizeof msg - 1);
    return 1;
  }
  if (faas_respond(client, 200, "OK", "application/octet-stream", req.body, req.body_len) != 0)
    return 1;
  close(client);
  return 0;
}
