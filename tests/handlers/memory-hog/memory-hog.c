/* memory-hog: takes the client socket, then allocates and touches 1 GiB in 16 MiB
 * steps, past faasd's 512 MiB container memory limit. It should be OOM-killed
 * before answering; if it survives it answers "survived <MiB> MiB". */
#include "faas_handler.h"

#include <sys/mman.h>

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  size_t step = 16u << 20, total = 0;
  while (total < (1024u << 20)) {
    char *p = mmap(NULL, step, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) break;
    for (size_t i = 0; i < step; i += 4096) p[i] = (char)i | 1;
    total += step;
  }
  char body[64];
  int n = snprintf(body, sizeof body, "survived %zu MiB\n", total >> 20);
  faas_respond(client, 200, "OK", "text/plain", body, (size_t)n);
  return 0;
}
