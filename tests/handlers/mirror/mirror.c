/* mirror: answers with the request it got, its header block and then its body, as the
 * body of the response (text/plain), so a test sees exactly what a client sent. The
 * status is 200, or NNN for a request path starting with /status/NNN (e.g. a 500). */
#include "faas_handler.h"

static int status_of(const char *head) {
  const char *path = strchr(head, ' ');
  if (!path || strncmp(path + 1, "/status/", 8) != 0) return 200;
  int status = atoi(path + 9);
  return status >= 100 && status <= 599 ? status : 200;
}

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 16u << 20) != 0) {
    const char msg[] = "bad request\n";
    faas_respond(client, 400, "Bad Request", "text/plain", msg, sizeof msg - 1);
    return 1;
  }
  size_t len = req.head_len + 4 + req.body_len;
  char *out = malloc(len);
  if (!out) return 1;
  memcpy(out, req.head, req.head_len);
  memcpy(out + req.head_len, "\r\n\r\n", 4);
  memcpy(out + req.head_len + 4, req.body, req.body_len);
  int status = status_of(req.head);
  if (faas_respond(client, status, status == 200 ? "OK" : "Mirrored", "text/plain", out, len) != 0)
    return 1;
  close(client);
  return 0;
}
