#!/bin/sh
# Boots the vmtest guest (the same VM as `pytest --vm=qemu`: Debian kernel from /boot,
# busybox initramfs, the host's / read-only over 9p with a RAM overlay, cgroup v2) and
# gives you a shell in it. Needs root. See docs/VMTEST_GUIDE.md.
#
#   scripts/vm-shell.sh                 command loop over the guest agent (live output,
#                                       Ctrl-C interrupts the command, cd is remembered)
#   scripts/vm-shell.sh -c 'uname -a'   one command; exits with its status
#   scripts/vm-shell.sh --console       bash on the serial console (Ctrl-A x quits qemu)
#   scripts/vm-shell.sh --keep          keep /tmp/faasd-qemu.*/ (console.log) afterwards
#
# The guest sees the host's files at the same paths (read-only; writes go to guest RAM),
# e.g. build/src/faasd; /mnt/xfer is a writable share with the host. Build before booting:
# files changed on the host while the guest runs may look stale inside.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/tests"
exec /usr/bin/python3 -m lib.qemu_vm "$@"
