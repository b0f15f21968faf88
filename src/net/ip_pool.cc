#include "net/ip_pool.h"

#include <charconv>
#include <cstdint>
#include <optional>

namespace faas::net {

namespace {

constexpr int kMinPrefix = 8;
constexpr int kMaxPrefix = 30;
constexpr uint32_t kReservedAtStart = 10;  // network+0 .. network+9 stay with the host

// Parses a decimal number of 1..max_digits digits with no leading zero and no sign.
std::optional<uint32_t> ParseDecimal(std::string_view text, size_t max_digits) {
  if (text.empty() || text.size() > max_digits) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;
  uint32_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// Splits off the part of `text` before the first `sep`, consuming it and the separator.
std::string_view TakeUntil(std::string_view& text, char sep) {
  size_t pos = text.find(sep);
  std::string_view head = text.substr(0, pos);
  text = pos == std::string_view::npos ? std::string_view() : text.substr(pos + 1);
  return head;
}

Error BadAddress(std::string_view text) {
  return MakeError(Errc::kInvalidArgument, "invalid IPv4 address \"" + std::string(text) + "\"");
}

Error BadCidr(std::string_view cidr, const std::string& why) {
  return MakeError(Errc::kInvalidArgument,
                   "invalid address pool \"" + std::string(cidr) + "\": " + why);
}

uint32_t NetmaskFor(int prefix_len) {
  return prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
}

}  // namespace

Result<Ipv4> Ipv4::Parse(std::string_view text) {
  std::string_view rest = text;
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    bool last_part = i == 3;
    if (!last_part && rest.find('.') == std::string_view::npos) return BadAddress(text);
    std::optional<uint32_t> part = ParseDecimal(TakeUntil(rest, '.'), 3);
    if (!part || *part > 255) return BadAddress(text);
    value = (value << 8) | *part;
  }
  if (!rest.empty() || text.back() == '.') return BadAddress(text);
  return Ipv4{value};
}

std::string Ipv4::ToString() const {
  return std::to_string(value >> 24) + '.' + std::to_string((value >> 16) & 0xff) + '.' +
         std::to_string((value >> 8) & 0xff) + '.' + std::to_string(value & 0xff);
}

Result<IpPool> IpPool::Parse(std::string_view cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) return BadCidr(cidr, "expected address/prefix");
  Result<Ipv4> network = Ipv4::Parse(cidr.substr(0, slash));
  if (!network.ok()) return BadCidr(cidr, network.error().message);
  std::optional<uint32_t> prefix = ParseDecimal(cidr.substr(slash + 1), 2);
  if (!prefix || *prefix < kMinPrefix || *prefix > kMaxPrefix) {
    return BadCidr(cidr, "prefix length must be between 8 and 30");
  }
  int prefix_len = static_cast<int>(*prefix);
  uint32_t mask = NetmaskFor(prefix_len);
  if ((network->value & ~mask) != 0) return BadCidr(cidr, "host bits are set");
  uint32_t broadcast = network->value | ~mask;
  uint32_t first = network->value + kReservedAtStart;
  uint32_t last = broadcast - 1;
  if (first > last) return BadCidr(cidr, "subnet too small for the reserved first ten addresses");
  return IpPool(*network, prefix_len, Ipv4{first}, Ipv4{last});
}

Result<Ipv4> IpPool::Allocate(const std::set<Ipv4>& taken) const {
  // `taken` is sorted, so walk it from first_ while it covers the candidate.
  uint64_t candidate = first_.value;
  for (auto it = taken.lower_bound(first_); it != taken.end() && it->value == candidate; ++it) {
    ++candidate;
  }
  if (candidate > last_.value) {
    return MakeError(Errc::kExhausted, "address pool " + ToString() + " is exhausted");
  }
  return Ipv4{static_cast<uint32_t>(candidate)};
}

std::string IpPool::ToString() const {
  return network_.ToString() + '/' + std::to_string(prefix_len_);
}

}  // namespace faas::net
