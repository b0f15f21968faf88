#include "common/error.h"

#include <cstring>

namespace faas {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kBadImage:
      return "bad image";
    case Errc::kNotFound:
      return "not found";
    case Errc::kConflict:
      return "conflict";
    case Errc::kTooLarge:
      return "too large";
    case Errc::kExhausted:
      return "exhausted";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kIo:
      return "i/o error";
    case Errc::kInternal:
      return "internal error";
  }
  return "unknown";
}

int HttpStatusFor(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kBadImage:
      return 400;
    case Errc::kNotFound:
      return 404;
    case Errc::kConflict:
      return 409;
    case Errc::kTooLarge:
      return 413;
    case Errc::kExhausted:
    case Errc::kUnavailable:
      return 503;
    case Errc::kIo:
    case Errc::kInternal:
      return 500;
  }
  return 500;
}

Error&& Error::Wrap(const std::string& context) && {
  message = context + ": " + message;
  return std::move(*this);
}

Error MakeError(Errc code, std::string message) { return Error{code, 0, std::move(message)}; }

Error SysError(int err, const std::string& what, Errc code) {
  return Error{code, err, what + ": " + std::strerror(err)};
}

}  // namespace faas
