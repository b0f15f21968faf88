/* hello-c: the smallest useful faasd function with the C SDK. Answers
 * "Hello, NAME!\n" where NAME is the query parameter `name` (default "world").
 * With HELLO_LOG_LINES=N in its environment it also writes N lines to stdout per
 * request, for measuring what the function log costs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faas.h"

static int hello(int client, const struct faas_request *req, void *ctx) {
  const long log_lines = *(const long *)ctx;
  char name[256];
  ssize_t got = faas_query_param(req, "name", name, sizeof name);
  if (got == -2) return faas_respond_error(client, 400, "name is too long") == 0 ? 0 : 1;
  if (got < 0) strcpy(name, "world");
  for (long i = 0; i < log_lines; ++i)
    printf("greeting %s, line %ld of %ld\n", name, i + 1, log_lines);
  if (log_lines > 0) fflush(stdout);
  char body[300];
  int len = snprintf(body, sizeof body, "Hello, %s!\n", name);
  return faas_respond(client, 200, "text/plain; charset=utf-8", body, (size_t)len) == 0 ? 0 : 1;
}

int main(void) {
  const char *lines = getenv("HELLO_LOG_LINES");
  long log_lines = lines ? strtol(lines, NULL, 10) : 0;
  return faas_serve(hello, NULL, &log_lines);
}
