// A client of etcd's v3 API through its JSON gateway (etcd 3.4: POST /v3/kv/range,
// /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange, /v3/lease/grant, /v3/lease/keepalive,
// /v3/lease/revoke, /v3/watch), over the project's libcurl transport. Keys and values
// are bytes (base64 on the wire); 64-bit numbers come as JSON strings.
//
// Every call goes to the endpoint that answered last, and on a connection failure to
// the next one: any member of the cluster serves a linearizable read or a write (it
// forwards to the leader), and a member cut off from the quorum answers an error or
// not at all, which is what callers must see.
//
// Thread-safe (one libcurl handle per call); blocking: never on the event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"

namespace faas::cluster {

struct EtcdOptions {
  std::vector<std::string> endpoints = {};  // "http://127.0.0.1:2379", ...
  std::chrono::milliseconds timeout{5000};  // a call (a watch: its connect only)
};

struct KeyValue {
  std::string key = {};
  std::string value = {};
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct WatchEvent {
  bool deleted = false;  // a DELETE; else a PUT
  KeyValue kv;           // a DELETE's has the key and mod_revision only
};

// One condition of a transaction: `key`'s create_revision (0: the key does not exist)
// or mod_revision equals `revision`.
struct Compare {
  enum class Target { kCreate, kMod };
  std::string key;
  Target target = Target::kMod;
  int64_t revision = 0;
};

// One operation of a transaction.
struct Op {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;  // kPut
  int64_t lease = 0;  // kPut: the lease the key lives under (0: none)
};

// The end of `prefix`'s key range: the prefix with its last byte incremented.
std::string PrefixEnd(const std::string& prefix);

class Etcd {
 public:
  explicit Etcd(EtcdOptions options);

  // The keys from `key` (exactly `key` unless `prefix`), and the store's revision then.
  // kUnavailable when no endpoint answers; kInternal for an answer that is not etcd's.
  Result<std::vector<KeyValue>> Range(const std::string& key, bool prefix = false,
                                      int64_t* revision = nullptr);
  // Writes `key`; returns the revision of the write.
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // Applies `success` if every comparison holds, else `failure`, atomically; whether
  // they held.
  Result<bool> Txn(const std::vector<Compare>& compare, const std::vector<Op>& success,
                   const std::vector<Op>& failure = {});
  // Writes `key` only if it does not exist (create_revision == 0): false if it did.
  Result<bool> Create(const std::string& key, const std::string& value, int64_t lease = 0);
  // Writes `key` only if its mod_revision is still `mod_revision` (0: it must not exist).
  Result<bool> CompareAndPut(const std::string& key, const std::string& value,
                             int64_t mod_revision);
  // Deletes `key` only if its mod_revision is still `mod_revision`.
  Result<bool> CompareAndDelete(const std::string& key, int64_t mod_revision);
  // Deletes `key` (or every key under it with `prefix`); returns how many went.
  Result<int64_t> Delete(const std::string& key, bool prefix = false);

  // A lease of `ttl`; its ID.
  Result<int64_t> GrantLease(std::chrono::seconds ttl);
  // Renews `lease` once; the TTL it has now, 0 when it had expired (keys gone).
  Result<int64_t> KeepAlive(int64_t lease);
  Status Revoke(int64_t lease);

  // Streams the changes under `prefix` from `start_revision` (the revision after a
  // Range's), calling `on_events` with each batch and the revision it brings the store
  // to, until `stop` returns true (Ok) or the stream breaks (kUnavailable; watch again from
  // the last revision seen + 1). `stop` is polled about once a second. kNotFound (compacted) when
  // `start_revision` is older than what etcd keeps: read the prefix again.
  Status Watch(const std::string& prefix, int64_t start_revision, const std::function<bool()>& stop,
               const std::function<void(const std::vector<WatchEvent>&, int64_t)>& on_events);

 private:
  class Call;
  EtcdOptions options_;
  std::atomic<size_t> preferred_{0};
};

}  // namespace faas::cluster
