#include "net/addresses.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "common/fd.h"
#include "common/io.h"

namespace faas::net {

namespace {

// Large enough for any datagram the kernel sends: it sizes dump replies by our biggest read,
// capped at 32 KiB.
constexpr size_t kReplyBufferSize = 32768;
// Requests are a header, a family header and a few short attributes.
constexpr size_t kRequestBufferSize = 256;
// IFNAMSIZ without the terminating NUL: the longest interface name or address label.
constexpr size_t kMaxNameLen = IFNAMSIZ - 1;

using ControlCallbacks = std::array<mnl_cb_t, NLMSG_MIN_TYPE>;

// The kernel's answer in an NLMSG_ERROR: 0 is the ACK that ends a request.
int OnError(const nlmsghdr* message, void* /*data*/) {
  if (message->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
    errno = EBADMSG;
    return MNL_CB_ERROR;
  }
  const auto* error = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(message));
  if (error->error == 0) return MNL_CB_STOP;
  errno = error->error < 0 ? -error->error : error->error;
  return MNL_CB_ERROR;
}

// The end of a dump. A dump that failed part way carries the negative errno in its payload.
int OnDone(const nlmsghdr* message, void* /*data*/) {
  if (message->nlmsg_len >= mnl_nlmsg_size(sizeof(int))) {
    int status = 0;
    std::memcpy(&status, mnl_nlmsg_get_payload(message), sizeof(status));
    if (status < 0) {
      errno = -status;
      return MNL_CB_ERROR;
    }
  }
  return MNL_CB_STOP;
}

int OnNoop(const nlmsghdr* /*message*/, void* /*data*/) { return MNL_CB_OK; }

ControlCallbacks MakeControlCallbacks() {
  ControlCallbacks callbacks{};
  callbacks[NLMSG_NOOP] = OnNoop;
  callbacks[NLMSG_ERROR] = OnError;
  callbacks[NLMSG_DONE] = OnDone;
  callbacks[NLMSG_OVERRUN] = OnNoop;
  return callbacks;
}

// Attributes of one message, indexed by type; types above the table's range are ignored.
template <size_t N>
using AttributeTable = std::array<const nlattr*, N>;

template <size_t N>
int StoreAttribute(const nlattr* attribute, void* data) {
  auto* table = static_cast<AttributeTable<N>*>(data);
  uint16_t type = mnl_attr_get_type(attribute);
  if (type < N) (*table)[type] = attribute;
  return MNL_CB_OK;
}

// A NUL-terminated string attribute, or nullptr when absent or malformed.
const char* StringAttribute(const nlattr* attribute) {
  if (attribute == nullptr || mnl_attr_validate(attribute, MNL_TYPE_NUL_STRING) < 0) {
    return nullptr;
  }
  return mnl_attr_get_str(attribute);
}

struct AddressDump {
  std::vector<AddressInfo> addresses;
  bool malformed = false;
};

// Fills `info` from one RTM_NEWADDR message; false when the message is malformed.
bool ParseAddress(const nlmsghdr* message, const ifaddrmsg& header, AddressInfo& info) {
  AttributeTable<IFA_MAX + 1> attributes{};
  if (mnl_attr_parse(message, sizeof(header), StoreAttribute<IFA_MAX + 1>, &attributes) < 0) {
    return false;
  }
  const nlattr* local = attributes[IFA_LOCAL] ? attributes[IFA_LOCAL] : attributes[IFA_ADDRESS];
  if (local == nullptr || mnl_attr_validate(local, MNL_TYPE_U32) < 0) return false;
  info.address = Ipv4{ntohl(mnl_attr_get_u32(local))};
  info.prefix_len = header.ifa_prefixlen;
  info.ifindex = static_cast<int>(header.ifa_index);
  const char* label = StringAttribute(attributes[IFA_LABEL]);
  if (label != nullptr) info.label = label;
  return true;
}

// Collects IPv4 addresses. A malformed message is noted but the dump is read to its end, so
// the socket is left clean for the next request.
int OnAddress(const nlmsghdr* message, void* data) {
  auto* dump = static_cast<AddressDump*>(data);
  if (message->nlmsg_type != RTM_NEWADDR) return MNL_CB_OK;
  if (message->nlmsg_len < mnl_nlmsg_size(sizeof(ifaddrmsg))) {
    dump->malformed = true;
    return MNL_CB_OK;
  }
  const auto* header = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(message));
  if (header->ifa_family != AF_INET) return MNL_CB_OK;
  AddressInfo info;
  if (ParseAddress(message, *header, info)) {
    dump->addresses.push_back(std::move(info));
  } else {
    dump->malformed = true;
  }
  return MNL_CB_OK;
}

struct LinkReply {
  std::string name;
};

int OnLink(const nlmsghdr* message, void* data) {
  auto* reply = static_cast<LinkReply*>(data);
  if (message->nlmsg_type != RTM_NEWLINK) return MNL_CB_OK;
  if (message->nlmsg_len < mnl_nlmsg_size(sizeof(ifinfomsg))) return MNL_CB_OK;
  AttributeTable<IFLA_IFNAME + 1> attributes{};
  if (mnl_attr_parse(message, sizeof(ifinfomsg), StoreAttribute<IFLA_IFNAME + 1>, &attributes) <
      0) {
    return MNL_CB_OK;
  }
  const char* name = StringAttribute(attributes[IFLA_IFNAME]);
  if (name != nullptr) reply->name = name;
  return MNL_CB_OK;
}

// Buffer for one outgoing request, aligned for the headers put into it.
struct RequestBuffer {
  alignas(nlmsghdr) std::array<char, kRequestBufferSize> bytes{};
};

nlmsghdr* PutHeader(RequestBuffer& buffer, uint16_t type, uint16_t flags) {
  nlmsghdr* message = mnl_nlmsg_put_header(buffer.bytes.data());
  message->nlmsg_type = type;
  message->nlmsg_flags = NLM_F_REQUEST | flags;
  return message;
}

nlmsghdr* PutAddressRequest(RequestBuffer& buffer, uint16_t type, uint16_t flags, int ifindex,
                            Ipv4 ip, int prefix_len) {
  nlmsghdr* message = PutHeader(buffer, type, NLM_F_ACK | flags);
  auto* header = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(message, sizeof(ifaddrmsg)));
  header->ifa_family = AF_INET;
  header->ifa_prefixlen = static_cast<uint8_t>(prefix_len);
  header->ifa_scope = RT_SCOPE_UNIVERSE;
  header->ifa_index = static_cast<uint32_t>(ifindex);
  // IFA_ADDRESS as well, so that deletion matches the prefix length too.
  mnl_attr_put_u32(message, IFA_LOCAL, htonl(ip.value));
  mnl_attr_put_u32(message, IFA_ADDRESS, htonl(ip.value));
  return message;
}

nlmsghdr* PutLinkRequest(RequestBuffer& buffer, uint16_t type, int ifindex) {
  nlmsghdr* message = PutHeader(buffer, type, NLM_F_ACK);
  auto* header = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(message, sizeof(ifinfomsg)));
  header->ifi_family = AF_UNSPEC;
  header->ifi_index = ifindex;
  return message;
}

// True when the datagram answers an earlier request (one abandoned after a socket error).
bool IsStale(const char* datagram, size_t size, uint32_t seq) {
  if (size < sizeof(nlmsghdr)) return false;
  nlmsghdr first;
  std::memcpy(&first, datagram, sizeof(first));
  return first.nlmsg_seq != seq;
}

// Changes the code of a failed `status` whose errno is one of `errnos`.
Status Remap(Status status, std::initializer_list<int> errnos, Errc code) {
  if (status.ok() ||
      std::find(errnos.begin(), errnos.end(), status.error().sys_errno) == errnos.end()) {
    return status;
  }
  Error error = std::move(status).error();
  error.code = code;
  return error;
}

std::string AddressText(Ipv4 ip, int prefix_len) {
  return ip.ToString() + '/' + std::to_string(prefix_len);
}

Status ValidateIfindex(int ifindex) {
  if (ifindex > 0) return Ok();
  return MakeError(Errc::kInvalidArgument, "invalid interface index " + std::to_string(ifindex));
}

Status ValidatePrefix(int prefix_len) {
  if (prefix_len >= 1 && prefix_len <= 32) return Ok();
  return MakeError(Errc::kInvalidArgument,
                   "invalid IPv4 prefix length " + std::to_string(prefix_len));
}

bool IsLabelSuffixChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// "lo" and "lo:faas" are valid labels for lo; "eth0:x", "lo:", "lo:a b", "lofaas" are not.
Status ValidateLabel(const std::string& label, const std::string& ifname) {
  if (label.size() <= kMaxNameLen) {
    if (label == ifname) return Ok();
    std::string_view suffix(label);
    if (suffix.size() > ifname.size() + 1 && suffix.starts_with(ifname) &&
        suffix[ifname.size()] == ':') {
      suffix.remove_prefix(ifname.size() + 1);
      if (std::all_of(suffix.begin(), suffix.end(), IsLabelSuffixChar)) return Ok();
    }
  }
  return MakeError(Errc::kInvalidArgument,
                   "invalid address label \"" + label + "\": want \"" + ifname + "\" or \"" +
                       ifname + ":<suffix>\" of [A-Za-z0-9_.-], at most 15 characters");
}

// An interface name usable as one path component under /proc/sys/net/ipv4/conf.
bool IsPlainIfname(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLen || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(),
                      [](char c) { return c == '/' || c == ':' || c <= ' ' || c == 0x7f; });
}

}  // namespace

void Netlink::SocketCloser::operator()(mnl_socket* socket) const { mnl_socket_close(socket); }

Netlink::Netlink(std::unique_ptr<mnl_socket, SocketCloser> socket, unsigned int portid)
    : socket_(std::move(socket)), portid_(portid), reply_buffer_(kReplyBufferSize) {}

Netlink::Netlink(Netlink&&) noexcept = default;
Netlink& Netlink::operator=(Netlink&&) noexcept = default;
Netlink::~Netlink() = default;

Result<Netlink> Netlink::Open() {
  std::unique_ptr<mnl_socket, SocketCloser> socket(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC));
  if (!socket) return SysError(errno, "open netlink socket");
  if (mnl_socket_bind(socket.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    return SysError(errno, "bind netlink socket");
  }
  unsigned int portid = mnl_socket_get_portid(socket.get());
  return Netlink(std::move(socket), portid);
}

Status Netlink::Exchange(nlmsghdr* request, MessageCallback on_message, void* data,
                         const std::string& what) {
  if (++seq_ == 0) ++seq_;  // 0 would match any reply in libmnl's sequence check
  request->nlmsg_seq = seq_;
  if (mnl_socket_sendto(socket_.get(), request, request->nlmsg_len) < 0) {
    return SysError(errno, what + ": netlink send");
  }
  ControlCallbacks control = MakeControlCallbacks();
  for (;;) {
    ssize_t received =
        mnl_socket_recvfrom(socket_.get(), reply_buffer_.data(), reply_buffer_.size());
    if (received < 0) {
      if (errno == EINTR) continue;
      return SysError(errno, what + ": netlink receive");
    }
    size_t size = static_cast<size_t>(received);
    if (IsStale(reply_buffer_.data(), size, seq_)) continue;
    errno = 0;
    int rc = mnl_cb_run2(reply_buffer_.data(), size, seq_, portid_, on_message, data,
                         control.data(), static_cast<unsigned int>(control.size()));
    if (rc == MNL_CB_STOP) return Ok();
    if (rc == MNL_CB_ERROR) return SysError(errno != 0 ? errno : EPROTO, what);
  }
}

Result<std::string> Netlink::LinkName(int ifindex) {
  FAAS_RETURN_IF_ERROR(ValidateIfindex(ifindex));
  RequestBuffer buffer;
  nlmsghdr* request = PutLinkRequest(buffer, RTM_GETLINK, ifindex);
  LinkReply reply;
  std::string what = "netlink RTM_GETLINK ifindex " + std::to_string(ifindex);
  FAAS_RETURN_IF_ERROR(Remap(Exchange(request, OnLink, &reply, what), {ENODEV}, Errc::kNotFound));
  if (reply.name.empty()) return MakeError(Errc::kInternal, what + ": reply without a name");
  return reply.name;
}

Result<std::vector<AddressInfo>> Netlink::ListIpv4() {
  RequestBuffer buffer;
  nlmsghdr* request = PutHeader(buffer, RTM_GETADDR, NLM_F_DUMP);
  auto* header = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(request, sizeof(ifaddrmsg)));
  header->ifa_family = AF_INET;
  AddressDump dump;
  const std::string what = "netlink RTM_GETADDR dump";
  FAAS_RETURN_IF_ERROR(Exchange(request, OnAddress, &dump, what));
  if (dump.malformed) return MakeError(Errc::kInternal, what + ": malformed address message");
  return std::move(dump.addresses);
}

Status Netlink::AddAddress(int ifindex, Ipv4 ip, int prefix_len, const std::string& label) {
  FAAS_RETURN_IF_ERROR(ValidatePrefix(prefix_len));
  FAAS_ASSIGN_OR_RETURN(std::string ifname, LinkName(ifindex));
  FAAS_RETURN_IF_ERROR(ValidateLabel(label, ifname));
  RequestBuffer buffer;
  nlmsghdr* request =
      PutAddressRequest(buffer, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, ip, prefix_len);
  mnl_attr_put_strz(request, IFA_LABEL, label.c_str());
  std::string what = "netlink RTM_NEWADDR " + AddressText(ip, prefix_len) + " label " + label;
  return Remap(Remap(Exchange(request, nullptr, nullptr, what), {EEXIST}, Errc::kConflict),
               {ENODEV}, Errc::kNotFound);
}

Status Netlink::DeleteAddress(int ifindex, Ipv4 ip, int prefix_len) {
  FAAS_RETURN_IF_ERROR(ValidateIfindex(ifindex));
  FAAS_RETURN_IF_ERROR(ValidatePrefix(prefix_len));
  RequestBuffer buffer;
  nlmsghdr* request = PutAddressRequest(buffer, RTM_DELADDR, 0, ifindex, ip, prefix_len);
  std::string what =
      "netlink RTM_DELADDR " + AddressText(ip, prefix_len) + " ifindex " + std::to_string(ifindex);
  return Remap(Exchange(request, nullptr, nullptr, what), {ENOENT, EADDRNOTAVAIL, ENODEV},
               Errc::kNotFound);
}

Status Netlink::SetLinkUp(int ifindex) {
  FAAS_RETURN_IF_ERROR(ValidateIfindex(ifindex));
  RequestBuffer buffer;
  nlmsghdr* request = PutLinkRequest(buffer, RTM_NEWLINK, ifindex);
  auto* header = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(request));
  header->ifi_change = IFF_UP;
  header->ifi_flags = IFF_UP;
  std::string what = "netlink RTM_NEWLINK up ifindex " + std::to_string(ifindex);
  return Remap(Exchange(request, nullptr, nullptr, what), {ENODEV}, Errc::kNotFound);
}

Result<int> LoopbackIndex() {
  unsigned int index = if_nametoindex("lo");
  if (index == 0) return SysError(errno, "if_nametoindex lo", Errc::kNotFound);
  return static_cast<int>(index);
}

Status EnablePromoteSecondaries(const std::string& ifname) {
  if (!IsPlainIfname(ifname)) {
    return MakeError(Errc::kInvalidArgument, "invalid interface name \"" + ifname + "\"");
  }
  std::string path = "/proc/sys/net/ipv4/conf/" + ifname + "/promote_secondaries";
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    return SysError(err, "open " + path, err == ENOENT ? Errc::kNotFound : Errc::kIo);
  }
  FAAS_RETURN_IF_ERROR_CTX(WriteAll(fd.get(), "1\n"), path);
  return Ok();
}

}  // namespace faas::net
