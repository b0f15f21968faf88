// Sends a function's output lines to journald as well (faasd --log-driver journald).
#pragma once

#include "server/telemetry.h"

namespace faas::logs {

// One journal entry for `line` (already cut and escaped in `text`): MESSAGE, PRIORITY
// (6 for stdout, 4 for stderr), SYSLOG_IDENTIFIER=faasd-fn:NAME, FAAS_FUNCTION,
// FAAS_CONTAINER, FAAS_VERSION and FAAS_STREAM. A datagram to journald's socket: it
// does not wait for journald. Failures are logged once per faasd run, never returned.
void SendToJournal(const server::OutputLine& line, std::string_view text);

}  // namespace faas::logs
