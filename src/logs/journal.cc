#include "logs/journal.h"

#include <systemd/sd-journal.h>

#include <cstring>
#include <string>

#include "common/log.h"

namespace faas::logs {

void SendToJournal(const server::OutputLine& line, std::string_view text) {
  const bool err = line.stream == server::Stream::kStderr;
  const std::string function(line.function), container(line.container);
  const int rc = sd_journal_send(
      "MESSAGE=%.*s", static_cast<int>(text.size()), text.data(), "PRIORITY=%d", err ? 4 : 6,
      "SYSLOG_IDENTIFIER=faasd-fn:%s", function.c_str(), "FAAS_FUNCTION=%s", function.c_str(),
      "FAAS_CONTAINER=%s", container.c_str(), "FAAS_VERSION=%llu",
      static_cast<unsigned long long>(line.version),  // NOLINT(runtime/int)
      "FAAS_STREAM=%s", server::StreamName(line.stream), nullptr);
  static bool warned = false;
  if (rc < 0 && !warned) {
    warned = true;
    spdlog::warn("journald: cannot send a function's output: {} (further failures not logged)",
                 std::strerror(-rc));
  }
}

}  // namespace faas::logs
