#include "pull/auth.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "common/file.h"

namespace faas::pull {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr size_t kMaxAuthFileBytes = 1 << 20;

Error Bad(const std::string& why) { return MakeError(Errc::kInvalidArgument, why); }

// "https://index.docker.io/v1/" -> "docker.io"; "http://host:5000/x" -> "host:5000".
std::string NormalizeKey(std::string key) {
  if (size_t scheme = key.find("://"); scheme != std::string::npos) key.erase(0, scheme + 3);
  key = key.substr(0, key.find('/'));
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (key == "index.docker.io" || key == "registry-1.docker.io") return "docker.io";
  return key;
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Result<Credentials> EntryCredentials(const nlohmann::json& entry) {
  if (!entry.is_object()) return Bad("an entry of \"auths\" is not an object");
  Credentials creds;
  if (auto auth = entry.find("auth");
      auth != entry.end() && auth->is_string() && !auth->get<std::string>().empty()) {
    std::optional<std::string> decoded = Base64Decode(auth->get<std::string>());
    size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) return Bad("an \"auth\" is not base64 of user:password");
    creds.username = decoded->substr(0, colon);
    creds.password = decoded->substr(colon + 1);
    return creds;
  }
  auto user = entry.find("username");
  auto pass = entry.find("password");
  if (user == entry.end() || pass == entry.end() || !user->is_string() || !pass->is_string())
    return Bad("an entry has neither \"auth\" nor \"username\" and \"password\"");
  creds.username = user->get<std::string>();
  creds.password = pass->get<std::string>();
  return creds;
}

using Entries = std::map<std::string, Credentials>;

Result<Entries> ParseEntries(std::string_view json) {
  nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return Bad("not a JSON object");
  Entries entries;
  auto auths = doc.find("auths");
  if (auths == doc.end()) return entries;
  if (!auths->is_object()) return Bad("\"auths\" is not an object");
  for (const auto& [key, entry] : auths->items()) {
    FAAS_ASSIGN_OR_RETURN(Credentials creds, EntryCredentials(entry));
    entries[NormalizeKey(key)] = std::move(creds);
  }
  return entries;
}

}  // namespace

Result<AuthFile> AuthFile::Parse(std::string_view json) {
  auto entries = ParseEntries(json);
  if (!entries.ok()) return std::move(entries).error().Wrap("registry auth file");
  AuthFile file;
  file.entries_ = std::move(*entries);
  return file;
}

Result<AuthFile> AuthFile::Load(const std::string& path) {
  auto text = ReadFile(path, kMaxAuthFileBytes);
  if (!text.ok())
    return Bad("cannot read the registry auth file " + path + ": " + text.error().message);
  auto entries = ParseEntries(*text);
  if (!entries.ok()) return std::move(entries).error().Wrap("registry auth file " + path);
  AuthFile file;
  file.entries_ = std::move(*entries);
  return file;
}

std::optional<Credentials> AuthFile::Find(const std::string& domain) const {
  auto it = entries_.find(NormalizeKey(domain));
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

Result<Challenge> ParseChallenge(std::string_view header) {
  auto bad = [] { return MakeError(Errc::kInvalidArgument, "malformed WWW-Authenticate"); };
  size_t i = 0;
  auto skip_space = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  skip_space();
  size_t start = i;
  while (i < header.size() && header[i] != ' ' && header[i] != '\t' && header[i] != ',') ++i;
  if (i == start) return bad();
  Challenge challenge{Lower(header.substr(start, i - start)), {}};
  while (i < header.size()) {
    skip_space();
    if (i < header.size() && header[i] == ',') {
      ++i;
      continue;
    }
    size_t key_start = i;
    while (i < header.size() && header[i] != '=' && header[i] != ',' && header[i] != ' ') ++i;
    if (i >= header.size() || header[i] != '=') break;  // the next challenge, or junk
    std::string key = Lower(header.substr(key_start, i - key_start));
    ++i;
    std::string value;
    if (i < header.size() && header[i] == '"') {
      for (++i; i < header.size() && header[i] != '"'; ++i) {
        if (header[i] == '\\' && i + 1 < header.size()) ++i;
        value += header[i];
      }
      if (i >= header.size()) return bad();
      ++i;
    } else {
      size_t value_start = i;
      while (i < header.size() && header[i] != ',' && header[i] != ' ') ++i;
      value = header.substr(value_start, i - value_start);
    }
    if (key.empty()) return bad();
    challenge.params[key] = value;
  }
  return challenge;
}

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) n |= static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    const char* p = std::char_traits<char>::find(kAlphabet, 64, c);
    if (p == nullptr) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(p - kAlphabet);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  if (count >= 6) return std::nullopt;  // a lone trailing character
  return out;
}

}  // namespace faas::pull
