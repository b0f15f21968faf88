/* complains: writes "boom" to stderr and exits with status 3 before connecting to
 * /control.sock, like a handler missing its configuration. A deploy's start check
 * must fail with both. */
#include <unistd.h>

int main(void) {
  static const char message[] = "boom\n";
  if (write(2, message, sizeof message - 1) < 0) return 4;
  return 3;
}
