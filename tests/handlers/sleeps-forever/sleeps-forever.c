/* sleeps-forever: takes the client socket, then sleeps until killed without
 * answering. faasd must kill it after its run timeout and clean up. */
#include "faas_handler.h"

int main(void) {
  int client = faas_receive_client();
  if (client < 0) return 1;
  for (;;) pause();
}
