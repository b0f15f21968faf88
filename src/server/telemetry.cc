#include "server/telemetry.h"

namespace faas::server {

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kHandlerError:
      return "handler_error";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kRejectedQueue:
      return "rejected_queue";
    case Outcome::kRejectedRate:
      return "rejected_rate";
    case Outcome::kRuntimeError:
      return "runtime_error";
  }
  return "?";
}

const char* StartKindName(StartKind start) {
  switch (start) {
    case StartKind::kNone:
      return "none";
    case StartKind::kCold:
      return "cold";
    case StartKind::kWarm:
      return "warm";
  }
  return "?";
}

const char* StreamName(Stream stream) { return stream == Stream::kStdout ? "stdout" : "stderr"; }

const char* DeployOutcomeName(DeployOutcome outcome) {
  switch (outcome) {
    case DeployOutcome::kOk:
      return "ok";
    case DeployOutcome::kBadImage:
      return "bad_image";
    case DeployOutcome::kStartFailed:
      return "start_failed";
    case DeployOutcome::kConflict:
      return "conflict";
    case DeployOutcome::kCancelled:
      return "cancelled";
    case DeployOutcome::kFailed:
      return "failed";
  }
  return "?";
}

}  // namespace faas::server
