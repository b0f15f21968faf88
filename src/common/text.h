// Untrusted text on its way to a terminal, and the rules for environment entries. Pure
// functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace faas {

// `text` with everything a terminal would act on made visible: C0 controls and DEL as
// "\xNN", C1 controls and the Unicode line separators and bidirectional overrides as
// "\uNNNN", and each byte that is not part of valid UTF-8 as "\xNN". Printable ASCII and
// other valid UTF-8 come out unchanged.
std::string EscapeControl(std::string_view text);

// Serialized JSON (as nlohmann::json::dump writes it: C0 controls occur only as whitespace
// between tokens, they are escaped inside strings) with DEL, C1 controls, the line separators and
// bidirectional overrides escaped as "\uNNNN" and each invalid UTF-8 byte replaced by "\ufffd".
// These occur only inside JSON strings, so the result is the same JSON value, and unchanged when
// there was none of them.
std::string EscapeJsonControl(std::string_view json);

// Checks one process environment entry "KEY=VALUE": the key is not empty and holds no
// control character (so no newline), and the entry holds no NUL (the exec would fail).
// The value may hold anything else, '=' and newlines included. Fails with
// kInvalidArgument and a message quoting the entry through EscapeControl.
Status ValidateEnvEntry(std::string_view entry);

// Decodes %XX and '+' (a space) of a URL's query component.
Result<std::string> PercentDecode(std::string_view text);

}  // namespace faas
