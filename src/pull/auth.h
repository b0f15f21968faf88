// Registry credentials (a docker-style config.json) and the challenges of
// WWW-Authenticate. Credentials never go into messages: errors name the file and the
// registry, never a user name, password or token.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace faas::pull {

struct Credentials {
  std::string username;
  std::string password;
};

// {"auths": {"host[:port]": {"auth": base64("user:pass")} or {"username", "password"}}}.
// Keys may carry a scheme and a path ("https://index.docker.io/v1/" is Docker Hub).
// Thread-safe to read once built.
class AuthFile {
 public:
  // Parses the text of a config file (untrusted JSON). kInvalidArgument when it is
  // not one: bad JSON, "auths" not an object, an "auth" that is not base64 of
  // "user:pass". Other members of the file ("credsStore", ...) are ignored.
  static Result<AuthFile> Parse(std::string_view json);
  // Reads and parses `path`; a missing or unreadable file is kInvalidArgument too.
  static Result<AuthFile> Load(const std::string& path);

  // The credentials for a registry domain as a Reference names it ("docker.io",
  // "127.0.0.1:5000"), if the file has some.
  std::optional<Credentials> Find(const std::string& domain) const;
  size_t size() const { return entries_.size(); }

 private:
  std::map<std::string, Credentials> entries_;  // by normalized domain
};

// A challenge of WWW-Authenticate: `Bearer realm="...",service="...",scope="..."`.
struct Challenge {
  std::string scheme;                         // lower case: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lower case
};

// Parses the first challenge of a WWW-Authenticate value. kInvalidArgument when empty
// or malformed.
Result<Challenge> ParseChallenge(std::string_view header);

std::string Base64Encode(std::string_view bytes);
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace faas::pull
