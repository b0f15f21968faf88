#include "pull/reference.h"

#include <vector>

namespace faas::pull {
namespace {

constexpr std::string_view kDockerHub = "docker.io";
constexpr size_t kMaxNameBytes = 255;
constexpr size_t kMaxTagBytes = 128;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

// The text is echoed up to its '@' only: a "user:password@host/..." typed by mistake
// must not reach a log.
Error Bad(std::string_view text, const std::string& why) {
  std::string shown;
  if (size_t at = text.rfind('@'); at != std::string_view::npos) {
    shown = "...";
    text = text.substr(at);
  }
  for (char c : text.substr(0, 300)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  return MakeError(Errc::kInvalidArgument, "bad image reference '" + shown + "': " + why);
}

std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t end = text.find(sep, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

// A path component: [a-z0-9]+ joined by '.', '_', '__' or any run of '-'.
bool ValidComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    size_t run = i;
    while (run < c.size() && !IsLowerAlnum(c[run])) ++run;
    std::string_view sep = c.substr(i, run - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
    i = run;
  }
  return true;
}

bool ValidPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!IsDigit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

bool ValidHostLabel(std::string_view label) {
  if (label.empty() || label.size() > 63 || !IsAlnum(label.front()) || !IsAlnum(label.back()))
    return false;
  for (char c : label)
    if (!IsAlnum(c) && c != '-') return false;
  return true;
}

// host[:port], where host is DNS labels or a bracketed IPv6 address.
bool ValidDomain(std::string_view domain) {
  std::string_view port;
  if (domain.starts_with('[')) {
    size_t close = domain.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : domain.substr(1, close - 1))
      if (!IsHex(c) && c != ':' && !(c >= 'A' && c <= 'F') && c != '.') return false;
    std::string_view rest = domain.substr(close + 1);
    if (rest.empty()) return true;
    return rest.front() == ':' && ValidPort(rest.substr(1));
  }
  size_t colon = domain.find(':');
  if (colon != std::string_view::npos) {
    port = domain.substr(colon + 1);
    domain = domain.substr(0, colon);
    if (!ValidPort(port)) return false;
  }
  for (std::string_view label : Split(domain, '.'))
    if (!ValidHostLabel(label)) return false;
  return true;
}

bool ValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagBytes) return false;
  if (!IsAlnum(tag.front()) && tag.front() != '_') return false;
  for (char c : tag)
    if (!IsAlnum(c) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

// As docker decides: a first component with '.', ':', an upper-case letter, or
// "localhost" names a registry.
bool LooksLikeDomain(std::string_view first) {
  if (first == "localhost") return true;
  for (char c : first)
    if (c == '.' || c == ':' || (c >= 'A' && c <= 'Z')) return true;
  return false;
}

Result<std::string> ParseDigest(std::string_view text, std::string_view digest) {
  if (!digest.starts_with("sha256:")) return Bad(text, "only sha256 digests are supported");
  std::string_view hex = digest.substr(7);
  if (hex.size() != 64) return Bad(text, "a sha256 digest has 64 hex digits");
  for (char c : hex)
    if (!IsHex(c)) return Bad(text, "a sha256 digest has 64 lower-case hex digits");
  return std::string(digest);
}

}  // namespace

std::string Reference::String() const {
  std::string out = domain + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

std::string Reference::ApiHost() const {
  return domain == kDockerHub ? "registry-1.docker.io" : domain;
}

std::string Reference::Hostname() const { return DomainHost(domain); }

std::string DomainHost(std::string_view domain) {
  if (domain.starts_with('[')) return std::string(domain.substr(1, domain.find(']') - 1));
  return std::string(domain.substr(0, domain.find(':')));
}

Result<Reference> ParseReference(std::string_view text) {
  if (text.empty()) return Bad(text, "it is empty");
  Reference ref;
  std::string_view name = text;
  if (size_t at = text.find('@'); at != std::string_view::npos) {
    FAAS_ASSIGN_OR_RETURN(ref.digest, ParseDigest(text, text.substr(at + 1)));
    name = text.substr(0, at);
  }
  size_t slash = name.rfind('/');
  size_t colon = name.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    std::string_view tag = name.substr(colon + 1);
    if (!ValidTag(tag)) return Bad(text, "a tag is 1 to 128 of A-Z a-z 0-9 _ . - (not first . -)");
    ref.tag = tag;
    name = name.substr(0, colon);
  }
  if (name.empty()) return Bad(text, "no repository name");
  std::vector<std::string_view> parts = Split(name, '/');
  if (parts.size() > 1 && LooksLikeDomain(parts.front())) {
    if (!ValidDomain(parts.front())) return Bad(text, "bad registry host");
    ref.domain = parts.front();
    parts.erase(parts.begin());
  } else {
    ref.domain = kDockerHub;
  }
  if (ref.domain == "index.docker.io") ref.domain = kDockerHub;
  for (std::string_view part : parts) {
    if (!ValidComponent(part)) {
      return Bad(text,
                 "repository names are lower case a-z 0-9, components joined by / and "
                 "separated by . _ __ or -");
    }
    ref.repository += (ref.repository.empty() ? "" : "/") + std::string(part);
  }
  if (ref.domain == kDockerHub && parts.size() == 1) ref.repository = "library/" + ref.repository;
  if (ref.domain.size() + 1 + ref.repository.size() > kMaxNameBytes)
    return Bad(text, "the name is longer than 255 characters");
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string Platform::String() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

Result<Platform> ParsePlatform(std::string_view text) {
  std::vector<std::string_view> parts = Split(text, '/');
  auto valid = [](std::string_view part) {
    if (part.empty() || part.size() > 32) return false;
    for (char c : part)
      if (!IsLowerAlnum(c) && c != '_' && c != '-') return false;
    return true;
  };
  if (parts.size() < 2 || parts.size() > 3 || !valid(parts[0]) || !valid(parts[1]) ||
      (parts.size() == 3 && !valid(parts[2]))) {
    std::string shown;
    for (char c : text.substr(0, 100)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    return MakeError(Errc::kInvalidArgument,
                     "bad platform '" + shown + "': expected os/arch[/variant], e.g. linux/arm64");
  }
  Platform platform{std::string(parts[0]), std::string(parts[1]), ""};
  if (parts.size() == 3) platform.variant = parts[2];
  return platform;
}

Platform HostPlatform() {
#if defined(__x86_64__)
  return {"linux", "amd64", ""};
#elif defined(__aarch64__)
  return {"linux", "arm64", ""};
#elif defined(__i386__)
  return {"linux", "386", ""};
#elif defined(__arm__)
  return {"linux", "arm", "v7"};
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return {"linux", "ppc64le", ""};
#elif defined(__s390x__)
  return {"linux", "s390x", ""};
#elif defined(__riscv) && __riscv_xlen == 64
  return {"linux", "riscv64", ""};
#else
  return {"linux", "amd64", ""};
#endif
}

}  // namespace faas::pull
