#include "server/notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

#include "common/log.h"

namespace faas::server {

ServiceNotifier::ServiceNotifier(boost::asio::io_context& io, std::function<std::string()> status)
    : status_(std::move(status)), status_timer_(io), watchdog_timer_(io) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && socket[0] != '\0';
  if (!enabled_) return;
  uint64_t usec = 0;
  if (int rc = sd_watchdog_enabled(0, &usec); rc > 0) {
    watchdog_ = std::chrono::microseconds(usec);
  } else if (rc < 0) {
    spdlog::warn("ignoring the watchdog settings: {}", std::strerror(-rc));
  }
}

void ServiceNotifier::Ready() {
  if (!enabled_) return;
  last_status_ = status_();
  Send("READY=1\nSTATUS=" + last_status_);
  ScheduleStatus();
  if (watchdog_.count() > 0) {
    spdlog::debug("watchdog: a ping every {} us", watchdog_.count() / 2);
    ScheduleWatchdog();
  }
}

void ServiceNotifier::UpdateStatus() {
  if (!enabled_ || stopping_) return;
  std::string status = status_();
  if (status == last_status_) return;
  last_status_ = std::move(status);
  Send("STATUS=" + last_status_);
}

void ServiceNotifier::Stopping() {
  if (!enabled_ || stopping_) return;
  stopping_ = true;
  status_timer_.cancel();
  Send("STOPPING=1\nSTATUS=draining: " + status_());
}

void ServiceNotifier::Send(const std::string& state) {
  // A service manager that went away is no reason to stop serving: logged, not fatal.
  if (int rc = sd_notify(0, state.c_str()); rc < 0)
    spdlog::warn("sd_notify: {}", std::strerror(-rc));
}

void ServiceNotifier::ScheduleStatus() {
  status_timer_.expires_after(kStatusPeriod);
  status_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    UpdateStatus();
    ScheduleStatus();
  });
}

// On the loop, never on a thread of its own: the ping proves the loop still turns.
void ServiceNotifier::ScheduleWatchdog() {
  watchdog_timer_.expires_after(watchdog_ / 2);
  watchdog_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    Send("WATCHDOG=1");
    ScheduleWatchdog();
  });
}

}  // namespace faas::server
