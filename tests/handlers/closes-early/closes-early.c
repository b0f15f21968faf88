/* closes-early: takes the client socket and closes it without reading or
 * answering, then exits 0. */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  close(client);
  return 0;
}
