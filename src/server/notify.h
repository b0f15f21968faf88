// systemd's service notification protocol (sd_notify(3)) for faasd run as a
// `Type=notify` service: READY=1 once it serves, STATUS= lines, STOPPING=1 when the
// drain starts and WATCHDOG=1 from the event loop when the unit sets WatchdogSec.
// Without NOTIFY_SOCKET in the environment (faasd not started by systemd) every call
// is a no-op and no timer runs.
//
// Children of faasd never see NOTIFY_SOCKET or WATCHDOG_*: runtime::Spawn leaves them
// out, since runc would otherwise proxy its containers' notifications to systemd.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <string>

namespace faas::server {

// Loop thread only: its timers run on `io`, which must outlive it.
class ServiceNotifier {
 public:
  // `status` says what faasd does now, e.g. "2 function(s), 17 request(s) served"; it
  // is called on the loop. Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID once
  // (sd_watchdog_enabled: a WATCHDOG_PID naming another process disables the watchdog).
  ServiceNotifier(boost::asio::io_context& io, std::function<std::string()> status);

  // Sends READY=1 and the status. From then on the status is sent again every
  // kStatusPeriod when it has changed and, with a watchdog, WATCHDOG=1 every half of
  // its interval from a loop timer: a loop that hangs stops the pings.
  void Ready();
  // Sends the status now if it has changed (after a deploy or a removal).
  void UpdateStatus();
  // Sends STOPPING=1 with a status saying so. The watchdog keeps pinging while the
  // loop drains; the periodic status stops.
  void Stopping();

  bool enabled() const { return enabled_; }
  // Zero without a watchdog.
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

  static constexpr std::chrono::seconds kStatusPeriod{5};

 private:
  void Send(const std::string& state);
  void ScheduleStatus();
  void ScheduleWatchdog();

  std::function<std::string()> status_;
  bool enabled_ = false;
  bool stopping_ = false;
  std::chrono::microseconds watchdog_{0};
  std::string last_status_;
  boost::asio::steady_timer status_timer_;
  boost::asio::steady_timer watchdog_timer_;
};

}  // namespace faas::server
