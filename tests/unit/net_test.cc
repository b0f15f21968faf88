// Tests for src/net: the address pool (pure) and rtnetlink address management on lo.
//
// Network rule: nothing here may touch the host's network namespace. The process moves into a
// fresh namespace before any test runs (global environment), and every test that talks to the
// kernel moves into another fresh one of its own and checks that it is no longer in the
// namespace the process started in. This holds both under ctest (one process per test) and
// when the binary runs all tests in one process. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "net/addresses.h"
#include "net/ip_pool.h"

namespace faas::net {
namespace {

// --- Namespace isolation --------------------------------------------------------------------

ino_t NetnsInode() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) return 0;
  return st.st_ino;
}

// The namespace the process started in, recorded before any test or environment runs.
const ino_t kOriginalNetns = NetnsInode();

class PrivateNetnsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_NE(NetnsInode(), kOriginalNetns);
  }
};

[[maybe_unused]] ::testing::Environment* const kPrivateNetns =
    ::testing::AddGlobalTestEnvironment(new PrivateNetnsEnvironment);

Ipv4 Ip(const char* text) {
  Result<Ipv4> ip = Ipv4::Parse(text);
  EXPECT_TRUE(ip.ok()) << text;
  return ip.ok() ? *ip : Ipv4{};
}

IpPool Pool(const char* cidr) {
  Result<IpPool> pool = IpPool::Parse(cidr);
  if (!pool.ok()) ADD_FAILURE() << cidr << ": " << pool.error().message;
  return std::move(pool).value();
}

// --- Ipv4 -----------------------------------------------------------------------------------

TEST(Ipv4Test, ParseRoundTrips) {
  for (const char* text :
       {"10.0.0.10", "0.0.0.0", "255.255.255.255", "192.168.1.200", "127.0.0.1", "10.255.0.1"}) {
    Result<Ipv4> ip = Ipv4::Parse(text);
    ASSERT_TRUE(ip.ok()) << text << ": " << ip.error().message;
    EXPECT_EQ(ip->ToString(), text);
  }
}

TEST(Ipv4Test, ParseUsesHostByteOrder) {
  EXPECT_EQ(Ip("10.0.0.10").value, 0x0a00000au);
  EXPECT_EQ(Ip("1.2.3.4").value, 0x01020304u);
  EXPECT_LT(Ip("10.0.0.9"), Ip("10.0.0.10"));
  EXPECT_LT(Ip("9.255.255.255"), Ip("10.0.0.0"));
}

TEST(Ipv4Test, ParseRejectsJunk) {
  for (const char* text : {"",          "10",         "10.0.0",     "10.0.0.",    "10.0.0.256",
                           "010.0.0.1", "10.0.0.01",  " 10.0.0.1",  "10.0.0.1 ",  "a.b.c.d",
                           "10..0.1",   ".10.0.0.1",  "10.0.0.1.",  "1.2.3.4.5",  "-1.0.0.0",
                           "+1.0.0.0",  "1.2.3.4/24", "1000.0.0.1", "0x0a.0.0.1", "10.0.0.1\n"}) {
    Result<Ipv4> ip = Ipv4::Parse(text);
    ASSERT_FALSE(ip.ok()) << "accepted \"" << text << "\"";
    EXPECT_EQ(ip.error().code, Errc::kInvalidArgument) << text;
  }
}

// --- IpPool ---------------------------------------------------------------------------------

TEST(IpPoolTest, ParsesSlash24) {
  IpPool pool = Pool("10.0.0.0/24");
  EXPECT_EQ(pool.prefix_len(), 24);
  EXPECT_EQ(pool.network(), Ip("10.0.0.0"));
  EXPECT_EQ(pool.first(), Ip("10.0.0.10"));
  EXPECT_EQ(pool.last(), Ip("10.0.0.254"));
  EXPECT_EQ(pool.ToString(), "10.0.0.0/24");
}

TEST(IpPoolTest, RangeForOtherPrefixes) {
  IpPool wide = Pool("10.0.0.0/8");
  EXPECT_EQ(wide.first(), Ip("10.0.0.10"));
  EXPECT_EQ(wide.last(), Ip("10.255.255.254"));
  IpPool mid = Pool("172.16.0.0/16");
  EXPECT_EQ(mid.first(), Ip("172.16.0.10"));
  EXPECT_EQ(mid.last(), Ip("172.16.255.254"));
  IpPool small = Pool("192.168.5.16/28");
  EXPECT_EQ(small.first(), Ip("192.168.5.26"));
  EXPECT_EQ(small.last(), Ip("192.168.5.30"));
  EXPECT_EQ(small.ToString(), "192.168.5.16/28");
}

TEST(IpPoolTest, RejectsBadInput) {
  for (const char* cidr :
       {"", "junk", "10.0.0.0", "10.0.0.0/", "/24", "10.0.0.0/2a", "10.0.0.0/024", "10.0.0.0/24 ",
        " 10.0.0.0/24", "10.0.0/24", "10.0.0.0/-24", "10.0.0.0/24/24", "10.0.0.0/7", "0.0.0.0/0",
        "10.0.0.0/31", "10.0.0.0/32", "10.0.0.0/100",
        // Valid prefixes whose range is empty once the first ten addresses are reserved.
        "10.0.0.0/29", "10.0.0.0/30"}) {
    Result<IpPool> pool = IpPool::Parse(cidr);
    ASSERT_FALSE(pool.ok()) << "accepted \"" << cidr << "\"";
    EXPECT_EQ(pool.error().code, Errc::kInvalidArgument) << cidr;
  }
}

TEST(IpPoolTest, RejectsHostBits) {
  for (const char* cidr : {"10.0.0.1/24", "10.0.1.0/16", "10.1.0.0/8", "192.168.5.8/28"}) {
    Result<IpPool> pool = IpPool::Parse(cidr);
    ASSERT_FALSE(pool.ok()) << "accepted \"" << cidr << "\"";
    EXPECT_EQ(pool.error().code, Errc::kInvalidArgument);
    EXPECT_NE(pool.error().message.find("host bits"), std::string::npos) << pool.error().message;
  }
}

TEST(IpPoolTest, ContainsIsTheUsableRange) {
  IpPool pool = Pool("10.0.0.0/24");
  EXPECT_FALSE(pool.Contains(Ip("10.0.0.0")));
  EXPECT_FALSE(pool.Contains(Ip("10.0.0.9")));
  EXPECT_TRUE(pool.Contains(Ip("10.0.0.10")));
  EXPECT_TRUE(pool.Contains(Ip("10.0.0.100")));
  EXPECT_TRUE(pool.Contains(Ip("10.0.0.254")));
  EXPECT_FALSE(pool.Contains(Ip("10.0.0.255")));
  EXPECT_FALSE(pool.Contains(Ip("10.0.1.10")));
  EXPECT_FALSE(pool.Contains(Ip("9.0.0.10")));
}

TEST(IpPoolTest, AllocatesLowestFree) {
  IpPool pool = Pool("10.0.0.0/24");
  Result<Ipv4> ip = pool.Allocate({});
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(*ip, Ip("10.0.0.10"));

  ip = pool.Allocate({Ip("10.0.0.10"), Ip("10.0.0.11"), Ip("10.0.0.13")});
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(*ip, Ip("10.0.0.12"));

  // Addresses outside the range do not count.
  ip = pool.Allocate({Ip("10.0.0.1"), Ip("10.0.0.9"), Ip("10.0.0.255"), Ip("192.168.0.10")});
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(*ip, Ip("10.0.0.10"));
}

TEST(IpPoolTest, AllocatesLastAddress) {
  IpPool pool = Pool("10.0.0.0/24");
  std::set<Ipv4> taken;
  for (uint32_t v = pool.first().value; v < pool.last().value; ++v) taken.insert(Ipv4{v});
  Result<Ipv4> ip = pool.Allocate(taken);
  ASSERT_TRUE(ip.ok());
  EXPECT_EQ(*ip, Ip("10.0.0.254"));
}

TEST(IpPoolTest, ReportsExhaustion) {
  IpPool pool = Pool("10.0.0.0/24");
  std::set<Ipv4> taken;
  for (uint32_t v = pool.first().value; v <= pool.last().value; ++v) taken.insert(Ipv4{v});
  EXPECT_EQ(taken.size(), 245u);
  Result<Ipv4> ip = pool.Allocate(taken);
  ASSERT_FALSE(ip.ok());
  EXPECT_EQ(ip.error().code, Errc::kExhausted);
  EXPECT_EQ(ip.error().message, "address pool 10.0.0.0/24 is exhausted");

  IpPool small = Pool("192.168.5.16/28");
  ip = small.Allocate({Ip("192.168.5.26"), Ip("192.168.5.27"), Ip("192.168.5.28"),
                       Ip("192.168.5.29"), Ip("192.168.5.30")});
  ASSERT_FALSE(ip.ok());
  EXPECT_EQ(ip.error().message, "address pool 192.168.5.16/28 is exhausted");
}

// --- Netlink, each test in its own fresh namespace ------------------------------------------

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

// Runs `command` through the shell and returns its stdout, or nullopt if it failed.
std::optional<std::string> RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "re");
  if (pipe == nullptr) return std::nullopt;
  std::string output;
  char chunk[512];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return output;
}

class AddressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_NE(NetnsInode(), kOriginalNetns) << "refusing to run in the original namespace";
    Result<Netlink> netlink = Netlink::Open();
    ASSERT_TRUE(netlink.ok()) << netlink.error().message;
    netlink_.emplace(std::move(netlink).value());
    Result<int> lo = LoopbackIndex();
    ASSERT_TRUE(lo.ok()) << lo.error().message;
    lo_ = *lo;
    Status up = netlink_->SetLinkUp(lo_);
    ASSERT_TRUE(up.ok()) << up.error().message;
  }

  Netlink& netlink() { return *netlink_; }

  void Add(const char* ip, const std::string& label = "lo:faas", int prefix_len = 24) {
    Status status = netlink().AddAddress(lo_, Ip(ip), prefix_len, label);
    ASSERT_TRUE(status.ok()) << ip << ": " << status.error().message;
  }

  void Delete(const char* ip, int prefix_len = 24) {
    Status status = netlink().DeleteAddress(lo_, Ip(ip), prefix_len);
    ASSERT_TRUE(status.ok()) << ip << ": " << status.error().message;
  }

  // IPv4 addresses on lo, as the kernel lists them.
  std::vector<AddressInfo> LoAddresses() {
    Result<std::vector<AddressInfo>> all = netlink().ListIpv4();
    EXPECT_TRUE(all.ok()) << all.error().message;
    std::vector<AddressInfo> on_lo;
    if (!all.ok()) return on_lo;
    for (const AddressInfo& info : *all) {
      if (info.ifindex == lo_) on_lo.push_back(info);
    }
    return on_lo;
  }

  std::optional<AddressInfo> Find(const char* ip) {
    for (const AddressInfo& info : LoAddresses()) {
      if (info.address == Ip(ip)) return info;
    }
    return std::nullopt;
  }

  std::optional<Netlink> netlink_;
  int lo_ = 0;
};

TEST_F(AddressTest, LoopbackIsUpWithItsOwnAddress) {
  EXPECT_GT(lo_, 0);
  std::optional<AddressInfo> loopback = Find("127.0.0.1");
  ASSERT_TRUE(loopback.has_value());
  EXPECT_EQ(loopback->prefix_len, 8);
  EXPECT_EQ(loopback->label, "lo");
  // Nothing else: this namespace is fresh.
  EXPECT_EQ(LoAddresses().size(), 1u);
}

TEST_F(AddressTest, AddedAddressIsListedWithLabelAndPrefix) {
  Add("10.0.0.10");
  std::optional<AddressInfo> info = Find("10.0.0.10");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->label, "lo:faas");
  EXPECT_EQ(info->prefix_len, 24);
  EXPECT_EQ(info->ifindex, lo_);
}

TEST_F(AddressTest, AddingTwiceConflicts) {
  Add("10.0.0.10");
  Status again = netlink().AddAddress(lo_, Ip("10.0.0.10"), 24, "lo:faas");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::kConflict);
  EXPECT_EQ(again.error().sys_errno, EEXIST);
  EXPECT_NE(again.error().message.find("10.0.0.10/24"), std::string::npos) << again.error().message;
  // The socket is still in step with the kernel after an error.
  Add("10.0.0.11");
  EXPECT_EQ(LoAddresses().size(), 3u);
}

TEST_F(AddressTest, DeleteRemovesTheAddress) {
  Add("10.0.0.10");
  Delete("10.0.0.10");
  EXPECT_FALSE(Find("10.0.0.10").has_value());
  EXPECT_TRUE(Find("127.0.0.1").has_value());
}

TEST_F(AddressTest, DeletingMissingAddressIsNotFound) {
  Status missing = netlink().DeleteAddress(lo_, Ip("10.0.0.10"), 24);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::kNotFound) << missing.error().message;
  EXPECT_NE(missing.error().sys_errno, 0);

  // Right address, wrong prefix length: also not there.
  Add("10.0.0.10");
  Status wrong_prefix = netlink().DeleteAddress(lo_, Ip("10.0.0.10"), 16);
  ASSERT_FALSE(wrong_prefix.ok());
  EXPECT_EQ(wrong_prefix.error().code, Errc::kNotFound) << wrong_prefix.error().message;
  EXPECT_TRUE(Find("10.0.0.10").has_value());
}

TEST_F(AddressTest, RejectsInvalidLabels) {
  for (const char* label : {"", "faas", "lo:", "lofaas", "eth0:faas", "lo:fa as", "lo:a/b",
                            "lo:0123456789abc", ":faas", "LO:faas"}) {
    Status status = netlink().AddAddress(lo_, Ip("10.0.0.10"), 24, label);
    ASSERT_FALSE(status.ok()) << "accepted label \"" << label << "\"";
    EXPECT_EQ(status.error().code, Errc::kInvalidArgument) << label;
  }
  EXPECT_FALSE(Find("10.0.0.10").has_value());
  // The longest valid label: 15 characters.
  Add("10.0.0.10", "lo:0123456789ab");
  EXPECT_EQ(Find("10.0.0.10")->label, "lo:0123456789ab");
}

TEST_F(AddressTest, RejectsInvalidArguments) {
  for (int prefix_len : {0, 33, -1}) {
    Status status = netlink().AddAddress(lo_, Ip("10.0.0.10"), prefix_len, "lo:faas");
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.error().code, Errc::kInvalidArgument);
  }
  Status bad_index = netlink().AddAddress(0, Ip("10.0.0.10"), 24, "lo:faas");
  ASSERT_FALSE(bad_index.ok());
  EXPECT_EQ(bad_index.error().code, Errc::kInvalidArgument);
}

TEST_F(AddressTest, MissingInterfaceIsNotFound) {
  constexpr int kNoSuchIndex = 4242;
  Status add = netlink().AddAddress(kNoSuchIndex, Ip("10.0.0.10"), 24, "lo:faas");
  ASSERT_FALSE(add.ok());
  EXPECT_EQ(add.error().code, Errc::kNotFound) << add.error().message;
  EXPECT_EQ(add.error().sys_errno, ENODEV);
  Status up = netlink().SetLinkUp(kNoSuchIndex);
  ASSERT_FALSE(up.ok());
  EXPECT_EQ(up.error().code, Errc::kNotFound) << up.error().message;
  Status del = netlink().DeleteAddress(kNoSuchIndex, Ip("10.0.0.10"), 24);
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(del.error().code, Errc::kNotFound) << del.error().message;
}

TEST_F(AddressTest, UnlabelledAddressSurvivesRemovalOfLabelledOnes) {
  ASSERT_TRUE(EnablePromoteSecondaries("lo").ok());
  Add("10.0.0.10");
  Add("10.0.0.200", "lo");  // by hand, no label of ours
  Add("10.0.0.11");
  Add("10.0.0.12");
  // What the daemon does on cleanup: remove every address carrying its label.
  for (const AddressInfo& info : LoAddresses()) {
    if (info.label != "lo:faas") continue;
    Status status = netlink().DeleteAddress(info.ifindex, info.address, info.prefix_len);
    ASSERT_TRUE(status.ok()) << status.error().message;
  }
  std::vector<AddressInfo> left = LoAddresses();
  ASSERT_EQ(left.size(), 2u);
  std::optional<AddressInfo> by_hand = Find("10.0.0.200");
  ASSERT_TRUE(by_hand.has_value());
  EXPECT_EQ(by_hand->label, "lo");
  EXPECT_EQ(by_hand->prefix_len, 24);
  EXPECT_TRUE(Find("127.0.0.1").has_value());
}

TEST_F(AddressTest, EnablePromoteSecondariesWritesOne) {
  const std::string path = "/proc/sys/net/ipv4/conf/lo/promote_secondaries";
  ASSERT_TRUE(WriteText(path, "0\n"));
  Status status = EnablePromoteSecondaries("lo");
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_EQ(ReadText(path), "1\n");
}

TEST_F(AddressTest, EnablePromoteSecondariesValidatesName) {
  for (const char* name : {"", ".", "..", "../lo", "lo/x", "a b", "0123456789abcdef"}) {
    Status status = EnablePromoteSecondaries(name);
    ASSERT_FALSE(status.ok()) << "accepted \"" << name << "\"";
    EXPECT_EQ(status.error().code, Errc::kInvalidArgument) << name;
  }
  Status missing = EnablePromoteSecondaries("nosuchif0");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
}

TEST_F(AddressTest, PromoteSecondariesKeepsSubnetWhenPrimaryGoes) {
  Status status = EnablePromoteSecondaries("lo");
  ASSERT_TRUE(status.ok()) << status.error().message;
  Add("10.0.0.10");
  Add("10.0.0.11");
  Add("10.0.0.12");
  Delete("10.0.0.10");
  EXPECT_FALSE(Find("10.0.0.10").has_value());
  EXPECT_TRUE(Find("10.0.0.11").has_value());
  EXPECT_TRUE(Find("10.0.0.12").has_value());
}

// The control for the test above: without promote_secondaries the kernel removes the
// secondaries together with the primary, so that test does prove something.
TEST_F(AddressTest, WithoutPromoteSecondariesSubnetGoesWithPrimary) {
  ASSERT_TRUE(WriteText("/proc/sys/net/ipv4/conf/all/promote_secondaries", "0\n"));
  ASSERT_TRUE(WriteText("/proc/sys/net/ipv4/conf/lo/promote_secondaries", "0\n"));
  Add("10.0.0.10");
  Add("10.0.0.11");
  Add("10.0.0.12");
  Delete("10.0.0.10");
  EXPECT_FALSE(Find("10.0.0.11").has_value());
  EXPECT_FALSE(Find("10.0.0.12").has_value());
  EXPECT_TRUE(Find("127.0.0.1").has_value());
}

TEST_F(AddressTest, SixtyAddressesAreAllListed) {
  IpPool pool = Pool("10.0.0.0/24");
  std::set<Ipv4> taken;
  for (int i = 0; i < 60; ++i) {
    Result<Ipv4> ip = pool.Allocate(taken);
    ASSERT_TRUE(ip.ok()) << ip.error().message;
    Status status = netlink().AddAddress(lo_, *ip, pool.prefix_len(), "lo:faas");
    ASSERT_TRUE(status.ok()) << ip->ToString() << ": " << status.error().message;
    taken.insert(*ip);
  }
  std::set<Ipv4> listed;
  for (const AddressInfo& info : LoAddresses()) {
    if (info.label != "lo:faas") continue;
    EXPECT_EQ(info.prefix_len, 24);
    listed.insert(info.address);
  }
  EXPECT_EQ(listed, taken);
  EXPECT_EQ(*listed.begin(), Ip("10.0.0.10"));
  EXPECT_EQ(*listed.rbegin(), Ip("10.0.0.69"));
  Result<Ipv4> next = pool.Allocate(listed);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, Ip("10.0.0.70"));
}

TEST_F(AddressTest, IpToolShowsTheLabel) {
  Add("10.0.0.10");
  Add("10.0.0.11", "lo");
  std::optional<std::string> output = RunCommand("ip -4 addr show dev lo 2>/dev/null");
  ASSERT_TRUE(output.has_value()) << "`ip` (iproute2) must be installed";
  std::istringstream lines(*output);
  std::string line;
  std::optional<std::string> labelled;
  std::optional<std::string> unlabelled;
  while (std::getline(lines, line)) {
    if (line.find("inet 10.0.0.10/24 ") != std::string::npos) labelled = line;
    if (line.find("inet 10.0.0.11/24 ") != std::string::npos) unlabelled = line;
  }
  ASSERT_TRUE(labelled.has_value()) << *output;
  EXPECT_TRUE(labelled->ends_with(" lo:faas")) << *labelled;
  ASSERT_TRUE(unlabelled.has_value()) << *output;
  EXPECT_TRUE(unlabelled->ends_with(" lo")) << *unlabelled;
}

TEST_F(AddressTest, MovedNetlinkKeepsWorking) {
  Netlink moved = std::move(*netlink_);
  netlink_.reset();
  ASSERT_TRUE(moved.AddAddress(lo_, Ip("10.0.0.10"), 24, "lo:faas").ok());
  Result<std::vector<AddressInfo>> all = moved.ListIpv4();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(std::any_of(all->begin(), all->end(),
                          [](const AddressInfo& info) { return info.label == "lo:faas"; }));
}

}  // namespace
}  // namespace faas::net
