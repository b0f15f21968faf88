// The etcd client and the cluster state against a real etcd (Debian's etcd-server),
// one member started by the test on loopback ports of its own.
#include "cluster/etcd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "cluster/state.h"
#include "common/file.h"

extern char** environ;

namespace faas::cluster {
namespace {

using namespace std::chrono_literals;

std::string Digest(char c) { return "sha256:" + std::string(64, c); }

// A loopback port nobody listens on now.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class EtcdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/etcd-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string client = "http://127.0.0.1:" + std::to_string(FreePort());
    const std::string peer = "http://127.0.0.1:" + std::to_string(FreePort());
    std::vector<std::string> args = {"etcd",
                                     "--name=t",
                                     "--data-dir=" + *dir_ + "/data",
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=t=" + peer,
                                     "--logger=zap",
                                     "--log-outputs=stderr",
                                     "--log-level=warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Its log goes to a file next to its data.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, (*dir_ + "/etcd.log").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int spawned = ::posix_spawnp(&pid_, "etcd", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ASSERT_EQ(spawned, 0) << "etcd-server is not installed";
    endpoint_ = new std::string(client);
    Etcd etcd({.endpoints = {client}, .timeout = 1000ms});
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!etcd.Put("/ping", "1").ok()) {
      ASSERT_EQ(::waitpid(pid_, nullptr, WNOHANG), 0)
          << "etcd exited: see " << *dir_ << "/etcd.log";
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "etcd did not start";
      std::this_thread::sleep_for(50ms);
    }
  }
  static void TearDownTestSuite() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (dir_ != nullptr) (void)RemoveTree(*dir_);
    delete dir_;
    delete endpoint_;
  }
  void SetUp() override {
    // Each test under a prefix of its own.
    prefix_ =
        "/t/" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "/";
  }

  Etcd Client() const { return Etcd({.endpoints = {*endpoint_}, .timeout = 5000ms}); }

  static inline pid_t pid_ = 0;
  static inline std::string* dir_ = nullptr;
  static inline std::string* endpoint_ = nullptr;
  std::string prefix_;
};

TEST(EtcdPrefixEnd, IncrementsTheLastByteThatCanBe) {
  EXPECT_EQ(PrefixEnd("/a/"), "/a0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff", 1)), std::string(1, '\0'));
}

TEST_F(EtcdTest, PutRangeDeleteAndTransactions) {
  Etcd etcd = Client();
  const std::string key = prefix_ + "k";
  auto rev = etcd.Put(key, std::string("v\0\xff", 3));
  ASSERT_TRUE(rev.ok()) << rev.error().message;
  int64_t revision = 0;
  auto kvs = etcd.Range(key, false, &revision);
  ASSERT_TRUE(kvs.ok()) << kvs.error().message;
  ASSERT_EQ(kvs->size(), 1u);
  EXPECT_EQ((*kvs)[0].value, std::string("v\0\xff", 3));
  EXPECT_EQ((*kvs)[0].mod_revision, *rev);
  EXPECT_GE(revision, *rev);

  EXPECT_FALSE(*etcd.Create(key, "again"));
  EXPECT_TRUE(*etcd.Create(prefix_ + "new", "1"));
  EXPECT_FALSE(*etcd.CompareAndPut(key, "x", *rev - 1));
  EXPECT_TRUE(*etcd.CompareAndPut(key, "x", *rev));
  EXPECT_EQ(etcd.Range(key)->at(0).value, "x");

  ASSERT_TRUE(etcd.Put(prefix_ + "dir/a", "1").ok());
  ASSERT_TRUE(etcd.Put(prefix_ + "dir/b", "2").ok());
  ASSERT_TRUE(etcd.Put(prefix_ + "dir0", "not under dir/").ok());
  EXPECT_EQ(etcd.Range(prefix_ + "dir/", true)->size(), 2u);
  EXPECT_EQ(*etcd.Delete(prefix_ + "dir/", true), 2);
  EXPECT_EQ(etcd.Range(prefix_ + "dir0")->size(), 1u);
}

TEST_F(EtcdTest, LeasedKeysGoWithTheLease) {
  Etcd etcd = Client();
  auto lease = etcd.GrantLease(10s);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(etcd.Put(prefix_ + "alive", "1", *lease).ok());
  auto ttl = etcd.KeepAlive(*lease);
  ASSERT_TRUE(ttl.ok()) << ttl.error().message;
  EXPECT_EQ(*ttl, 10);
  EXPECT_EQ(etcd.Range(prefix_ + "alive")->at(0).lease, *lease);
  ASSERT_TRUE(etcd.Revoke(*lease).ok());
  EXPECT_TRUE(etcd.Range(prefix_ + "alive")->empty());
  EXPECT_EQ(*etcd.KeepAlive(*lease), 0);  // gone
}

TEST_F(EtcdTest, WatchSeesPutsAndDeletesFromARevision) {
  Etcd etcd = Client();
  int64_t start = 0;
  ASSERT_TRUE(etcd.Range(prefix_, true, &start).ok());
  ASSERT_TRUE(etcd.Put(prefix_ + "a", "1").ok());  // before the watch starts: still seen
  std::atomic<bool> stop{false};
  std::promise<void> three;
  std::vector<WatchEvent> seen;
  std::thread watcher([&] {
    Status st = etcd.Watch(
        prefix_, start + 1, [&] { return stop.load(); },
        [&](const std::vector<WatchEvent>& events, int64_t) {
          seen.insert(seen.end(), events.begin(), events.end());
          if (seen.size() == 3) three.set_value();
        });
    EXPECT_TRUE(st.ok()) << st.error().message;
  });
  ASSERT_TRUE(etcd.Put(prefix_ + "b", "2").ok());
  ASSERT_TRUE(etcd.Delete(prefix_ + "a").ok());
  ASSERT_EQ(three.get_future().wait_for(10s), std::future_status::ready);
  stop = true;
  watcher.join();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].kv.key, prefix_ + "a");
  EXPECT_FALSE(seen[0].deleted);
  EXPECT_EQ(seen[1].kv.value, "2");
  EXPECT_TRUE(seen[2].deleted);
  EXPECT_EQ(seen[2].kv.key, prefix_ + "a");
}

TEST_F(EtcdTest, AnUnreachableEndpointIsSkippedAndNoneAnsweringIsUnavailable) {
  Etcd both({.endpoints = {"http://127.0.0.1:" + std::to_string(FreePort()), *endpoint_},
             .timeout = 2000ms});
  EXPECT_TRUE(both.Put(prefix_ + "k", "1").ok());
  Etcd none({.endpoints = {"http://127.0.0.1:" + std::to_string(FreePort())}, .timeout = 500ms});
  auto r = none.Range(prefix_ + "k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
}

TEST_F(EtcdTest, NewFunctionsAtOnceGetDistinctAddressesAndNamesAreCreatedOnce) {
  Etcd etcd = Client();
  ClusterState state(etcd, prefix_);
  auto pool = net::IpPool::Parse("10.0.0.0/24");
  ASSERT_TRUE(pool.ok());
  // Eight deploys at the same instant, two of each name.
  std::vector<std::future<Result<FunctionSpec>>> deploys;
  std::promise<void> go;
  std::shared_future<void> start = go.get_future().share();
  for (int i = 0; i < 8; ++i) {
    deploys.push_back(std::async(std::launch::async, [&, i] {
      start.wait();
      Etcd own = Client();
      ClusterState mine(own, prefix_);
      FunctionSpec spec{.name = "fn" + std::to_string(i % 4)};
      spec.serving = {.version = 1,
                      .image_ref = "127.0.0.1:5000/fn:1",
                      .manifest_digest = "sha256:" + std::string(64, 'a'),
                      .platform = "linux/amd64",
                      .deployed_by = "node" + std::to_string(i)};
      return mine.Create(spec, *pool);
    }));
  }
  go.set_value();
  std::set<std::string> ips, names;
  int conflicts = 0;
  for (auto& d : deploys) {
    Result<FunctionSpec> r = d.get();
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, Errc::kConflict) << r.error().message;
      ++conflicts;
      continue;
    }
    EXPECT_TRUE(ips.insert(r->ip).second) << r->ip;
    EXPECT_TRUE(names.insert(r->name).second) << r->name;
  }
  EXPECT_EQ(conflicts, 4);
  EXPECT_EQ(names.size(), 4u);
  EXPECT_EQ(state.Functions()->size(), 4u);
}

TEST_F(EtcdTest, UpdatesAreOverTheRevisionReadAndRemovalFreesTheAddress) {
  Etcd etcd = Client();
  ClusterState state(etcd, prefix_);
  auto pool = net::IpPool::Parse("10.0.0.0/24");
  FunctionSpec spec{.name = "web"};
  spec.serving = {.version = 1, .image_ref = "r/web:1", .manifest_digest = Digest('b')};
  spec.latest = 1;
  auto created = state.Create(spec, *pool);
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(created->ip, pool->first().ToString());

  FunctionSpec next = created->WithVersion({.manifest_digest = Digest('c')}, 3);
  auto updated = state.Update(next);
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  EXPECT_EQ(updated->serving.version, 2u);
  ASSERT_EQ(updated->kept.size(), 1u);
  EXPECT_EQ(updated->kept[0].manifest_digest, Digest('b'));
  // A writer that read before the update loses, and so does a removal of what it read.
  FunctionSpec stale = created->WithVersion({.manifest_digest = Digest('d')}, 3);
  EXPECT_EQ(state.Remove("web", created->mod_revision).error().code, Errc::kConflict);
  auto lost = state.Update(stale);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().code, Errc::kConflict);

  auto lease = etcd.GrantLease(30s);
  ASSERT_TRUE(
      state.Report({.function = "web", .node = "n1", .version = 2, .ready = true}, *lease).ok());
  ASSERT_EQ(state.Statuses("web")->size(), 1u);
  ASSERT_TRUE(state.Remove("web").ok());
  EXPECT_EQ(state.Function("web").error().code, Errc::kNotFound);
  EXPECT_TRUE(state.Statuses("web")->empty());
  // Its address is free for the next function.
  auto again = state.Create({.name = "api"}, *pool);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->ip, pool->first().ToString());
  EXPECT_TRUE(again->pending());  // created without a version: its first deploy is under way
}

TEST(FunctionSpecTest, NewVersionsAreNumberedOnAndRollbacksKeepWhatServed) {
  FunctionSpec spec{.name = "web", .ip = "10.0.0.1"};
  EXPECT_TRUE(spec.pending());
  for (char c : {'a', 'b', 'c', 'd'}) spec = spec.WithVersion({.manifest_digest = Digest(c)}, 3);
  EXPECT_EQ(spec.serving.version, 4u);
  EXPECT_EQ(spec.latest, 4u);
  ASSERT_EQ(spec.kept.size(), 2u);  // three versions in all
  EXPECT_EQ(spec.kept[0].version, 3u);
  EXPECT_EQ(spec.kept[1].version, 2u);

  auto back = spec.RolledBack(0);  // the one before
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->serving.version, 3u);
  EXPECT_EQ(back->kept[0].version, 4u);
  EXPECT_EQ(back->RolledBack(2)->serving.manifest_digest, Digest('b'));
  EXPECT_EQ(spec.RolledBack(1).error().code, Errc::kNotFound);
  EXPECT_EQ(spec.RolledBack(4).error().code, Errc::kConflict);
  // A deploy after a rollback gets the next number never given out.
  EXPECT_EQ(back->WithVersion({.manifest_digest = Digest('e')}, 3).serving.version, 5u);

  // The JSON round trip keeps all of it.
  auto read = SpecFromJson("web", ToJson(*back).dump());
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->serving.version, 3u);
  EXPECT_EQ(read->latest, 4u);
  ASSERT_EQ(read->kept.size(), 2u);
  EXPECT_EQ(read->kept[1].manifest_digest, Digest('b'));
  EXPECT_FALSE(SpecFromJson("web", R"({"ip":"x","version":1})").ok());
}

TEST_F(EtcdTest, NodesAreAnnouncedUnderTheirLease) {
  Etcd etcd = Client();
  ClusterState state(etcd, prefix_);
  auto lease = etcd.GrantLease(30s);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(
      state.Announce({.name = "n1", .address = "10.1.0.1", .version = "0.1.0"}, *lease).ok());
  auto nodes = state.Nodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].address, "10.1.0.1");
  ASSERT_TRUE(etcd.Revoke(*lease).ok());
  EXPECT_TRUE(state.Nodes()->empty());
}

}  // namespace
}  // namespace faas::cluster
