// What a function's scaler sees of one of its containers (Container implements it;
// unit tests use fakes). Lives on the event loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "common/fd.h"

namespace faas::server {

// A client connection on its way to a container, with what its request record needs.
struct Client {
  UniqueFd fd;
  std::string peer;  // "ADDR:PORT"
  std::chrono::system_clock::time_point accepted_wall = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point accepted = std::chrono::steady_clock::now();
  std::chrono::microseconds queue_wait{0};  // in the admission queue (set by the scaler)

  explicit operator bool() const { return static_cast<bool>(fd); }
};

class Instance {
 public:
  using Callback = std::function<void(Instance*)>;
  // `done` runs once the container is gone and cleaned up; `idle` when a container
  // that may serve several clients is ready for its next one; `ready` when the
  // handler of a container started without a client has connected (it waits for one).
  struct Events {
    Callback done;
    Callback idle;
    Callback ready;
  };

  virtual ~Instance() = default;
  // Starts the container. Failures end in cleanup, then `done` (possibly at once).
  virtual void Start() = 0;
  // Gives a container without a client its client. False (and the client is left
  // with the caller) when it cannot take one.
  virtual bool Attach(Client& client) = 0;
  // Reports to `events` from now on (a container started by a deploy's check and
  // adopted by its function's scaler).
  virtual void SetEvents(Events events) = 0;
  // Kills it now; cleanup and `done` follow.
  virtual void Kill(const char* why) = 0;
  // Its handler waits for a client.
  virtual bool ready() const = 0;
  // It has been given a client.
  virtual bool served() const = 0;
  // It may come back (`idle`) for another client after the current one.
  virtual bool may_serve_again() const = 0;
};

}  // namespace faas::server
