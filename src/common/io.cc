#include "common/io.h"

namespace faas {
namespace {

constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

Status WriteAll(int fd, std::string_view data) { return WriteAllWith(::write, fd, data); }

Result<std::string> ReadAll(int fd, size_t max_bytes) {
  std::string out;
  for (;;) {
    const size_t used = out.size();
    // Asking for one byte past the cap tells "exactly max_bytes" from "more".
    const size_t room = max_bytes - used;
    const size_t want = room < kReadChunk ? room + 1 : kReadChunk;
    out.resize(used + want);
    const ssize_t n = ::read(fd, out.data() + used, want);
    if (n < 0) {
      const int err = errno;
      out.resize(used);
      if (err == EINTR) continue;
      return SysError(err, "read");
    }
    out.resize(used + static_cast<size_t>(n));
    if (n == 0) return out;
    if (out.size() > max_bytes) {
      return MakeError(Errc::kTooLarge, "larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
}

}  // namespace faas
