/* hello-c: the smallest useful faasd function with the C SDK. Answers
 * "Hello, NAME!\n" where NAME is the query parameter `name` (default "world"). */
#include <stdio.h>
#include <string.h>

#include "faas.h"

static int hello(int client, const struct faas_request *req, void *ctx) {
  (void)ctx;
  char name[256];
  ssize_t got = faas_query_param(req, "name", name, sizeof name);
  if (got == -2) return faas_respond_error(client, 400, "name is too long") == 0 ? 0 : 1;
  if (got < 0) strcpy(name, "world");
  char body[300];
  int len = snprintf(body, sizeof body, "Hello, %s!\n", name);
  return faas_respond(client, 200, "text/plain; charset=utf-8", body, (size_t)len) == 0 ? 0 : 1;
}

int main(void) { return faas_serve(hello, NULL, NULL); }
