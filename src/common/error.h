// Error values for the whole library: ordinary failures are returned, not thrown.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace faas {

// What went wrong, coarse enough to map to one HTTP status and one CLI exit code.
enum class Errc {
  kInvalidArgument,  // bad name, bad flag, bad request: 400
  kBadImage,         // the uploaded image is malformed or unsafe: 400
  kNotFound,         // unknown function: 404
  kConflict,         // name busy (a deploy of it is under way): 409
  kTooLarge,         // over a configured size limit: 413
  kExhausted,        // no free address in the pool: 503
  kUnavailable,      // shutting down, or a peer went away: 503
  kIo,               // our own I/O failed: 500
  kInternal,         // a bug or an unexpected library failure: 500
};

const char* ErrcName(Errc code);
int HttpStatusFor(Errc code);

struct Error {
  Errc code = Errc::kInternal;
  int sys_errno = 0;  // 0 when the failure did not come from a syscall
  std::string message;

  // Prefixes the message with context as the error travels up:
  // Error("open: No such file").Wrap("import web") -> "import web: open: ...".
  Error&& Wrap(const std::string& context) &&;
  std::string ToString() const { return message; }
};

Error MakeError(Errc code, std::string message);
// An error from a failed syscall: message is "<what>: strerror(err)".
Error SysError(int err, const std::string& what, Errc code = Errc::kIo);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status Ok() { return {}; }

}  // namespace faas

#define FAAS_CONCAT_INNER(a, b) a##b
#define FAAS_CONCAT(a, b) FAAS_CONCAT_INNER(a, b)

// Returns the error of a Status/Result expression from the enclosing function.
#define FAAS_RETURN_IF_ERROR(expr)                                  \
  do {                                                              \
    auto faas_status_ = (expr);                                     \
    if (!faas_status_.ok()) return std::move(faas_status_).error(); \
  } while (0)

// Same, adding context to the message.
#define FAAS_RETURN_IF_ERROR_CTX(expr, ctx)                                   \
  do {                                                                        \
    auto faas_status_ = (expr);                                               \
    if (!faas_status_.ok()) return std::move(faas_status_).error().Wrap(ctx); \
  } while (0)

// auto x = FAAS_TRY(...) is not portable; this declares `lhs` from a Result.
#define FAAS_ASSIGN_OR_RETURN(lhs, expr) \
  FAAS_ASSIGN_OR_RETURN_IMPL(FAAS_CONCAT(faas_result_, __LINE__), lhs, expr)
#define FAAS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).error();    \
  lhs = std::move(tmp).value()
