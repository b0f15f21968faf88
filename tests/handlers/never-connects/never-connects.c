/* never-connects: never touches /control.sock; sleeps until killed. faasd must
 * give up after its connect timeout, answer the client itself and clean up. */
#include <unistd.h>

int main(void) {
  for (;;) pause();
}
