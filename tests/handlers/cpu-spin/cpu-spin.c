/* cpu-spin: takes the client, reads the request, then burns CPU forever without
 * answering. Only the run timeout ends it. */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  static struct faas_request req;
  if (faas_read_request(client, &req, 0) != 0) return 1;
  volatile unsigned long spins = 0;
  for (;;) spins++;
}
