/* exit-nonzero: exits with status 3 at once, before connecting to /control.sock.
 * faasd still holds the client and answers it itself (502 Bad Gateway). */
int main(void) { return 3; }
