#include "logs/function_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/file.h"
#include "common/io.h"
#include "common/log.h"
#include "common/text.h"
#include "logs/journal.h"

namespace faas::logs {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

constexpr char kCurrent[] = "/current.log";
constexpr char kPrevious[] = "/previous.log";
// Where a record's fields sit: `{"time":"` TIME `","stream":"` STREAM `"`.
constexpr size_t kTimeAt = 9;
constexpr size_t kTimeSize = 24;
constexpr size_t kStreamAt = kTimeAt + kTimeSize + 12;
// How soon after a burst over the budget its "N lines dropped" is written at the latest.
constexpr auto kDropMarkerDelay = std::chrono::seconds(1);

Json Head(Clock::time_point time, const char* stream, uint64_t version) {
  return Json{{"time", FormatTime(time)}, {"stream", stream}, {"version", version}};
}

std::string Dump(const Json& record) {
  return record.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace) + "\n";
}

int64_t Ms(std::chrono::microseconds us) { return duration_cast<milliseconds>(us).count(); }

std::string_view TimeOf(std::string_view record) {
  return record.size() > kTimeAt + kTimeSize ? record.substr(kTimeAt, kTimeSize)
                                             : std::string_view();
}

std::string_view StreamOf(std::string_view record) {
  if (record.size() <= kStreamAt) return {};
  std::string_view rest = record.substr(kStreamAt);
  return rest.substr(0, rest.find('"'));
}

bool Matches(std::string_view record, const LogQuery& query, const std::string& since) {
  if (!query.stream.empty() && StreamOf(record) != query.stream) return false;
  return since.empty() || TimeOf(record) >= since;
}

// Adds the whole records of `data` that match to `picked`; one cut short (by a full
// disk, a crash) is left out.
void Pick(std::string_view data, const LogQuery& query, const std::string& since,
          std::vector<std::string_view>& picked) {
  for (size_t nl; (nl = data.find('\n')) != std::string_view::npos;) {
    const std::string_view record = data.substr(0, nl + 1);
    data.remove_prefix(nl + 1);
    const bool whole = record.starts_with("{\"time\":\"") && record.ends_with("}\n");
    if (whole && Matches(record, query, since)) picked.push_back(record);
  }
}

Result<std::string> ReadIfThere(const std::string& path, size_t max) {
  auto data = ReadFile(path, max);
  if (!data.ok() && data.error().sys_errno == ENOENT) return std::string();
  return data;
}

}  // namespace

struct FunctionLogs::FunctionState {
  UniqueFd fd;
  uint64_t size = 0;
  double tokens = 0;
  steady_clock::time_point refilled;
  uint64_t dropped = 0;        // since faasd started
  uint64_t pending_drops = 0;  // since the last record written
  bool broken = false;         // writing failed: logged once, retried at the next rotation
};

struct FunctionLogs::Followers {
  struct Entry {
    std::string function;
    std::string stream;
    LogFollower* follower;
  };
  std::map<uint64_t, Entry> entries;
  uint64_t next_id = 1;

  // Ends (and forgets) the followers for which `pick` is true.
  template <typename Pick>
  void End(Pick pick) {
    std::vector<LogFollower*> ended;
    for (auto it = entries.begin(); it != entries.end();) {
      if (pick(it->second)) {
        ended.push_back(it->second.follower);
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
    for (LogFollower* follower : ended) follower->OnEnd();
  }
};

namespace {

// Unsubscribes its follower when the last copy of it goes.
class Subscription {
 public:
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  ~Subscription() { cancel_(); }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

 private:
  std::function<void()> cancel_;
};

}  // namespace

FunctionLogs::FunctionLogs(boost::asio::io_context& io, LogOptions options)
    : options_(std::move(options)), followers_(std::make_shared<Followers>()), drop_timer_(io) {}

FunctionLogs::~FunctionLogs() = default;

std::vector<Error> FunctionLogs::Start(const std::set<std::string>& live) {
  std::vector<Error> errors;
  if (auto st = MakeDirs(options_.dir, 0700); !st.ok()) return {st.error()};
  if (::chmod(options_.dir.c_str(), 0700) != 0)
    errors.push_back(SysError(errno, "chmod " + options_.dir));
  DIR* dir = ::opendir(options_.dir.c_str());
  if (dir == nullptr) return {SysError(errno, "open " + options_.dir)};
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != ".." && !live.contains(name)) stale.push_back(name);
  }
  ::closedir(dir);
  for (const auto& name : stale) {
    if (auto st = RemoveTree(Dir(name)); !st.ok()) errors.push_back(st.error());
  }
  return errors;
}

FunctionLogs::FunctionState& FunctionLogs::State(const std::string& function) {
  auto it = functions_.find(function);
  if (it != functions_.end()) return it->second;
  FunctionState& state = functions_[function];
  state.tokens = static_cast<double>(options_.rate_bytes);
  state.refilled = steady_clock::now();
  return state;
}

void FunctionLogs::OnOutput(const server::OutputLine& line) {
  const std::string function(line.function);
  const bool cut = line.cut || line.text.size() > kMaxLine;
  const std::string text = EscapeControl(line.text.substr(0, kMaxLine));
  Json record = Head(line.time, server::StreamName(line.stream), line.version);
  record["container"] = line.container;
  record["line"] = text;
  if (cut) record["cut"] = true;
  if (Append(function, Dump(record)) && options_.journald) SendToJournal(line, text);
}

void FunctionLogs::OnDeploy(const server::DeployRecord& record) {
  if (record.outcome != server::DeployOutcome::kOk) return;
  removed_.erase(record.function);
  FunctionState& state = State(record.function);
  if (state.fd) return;
  if (auto st = Rotate(record.function, state); !st.ok()) {
    spdlog::warn("log of {}: {}", record.function, st.error().message);
    state.broken = true;
  }
}

void FunctionLogs::OnRequest(const server::RequestRecord& r) {
  Json record = Head(r.accepted, "request", r.version);
  record["container"] = r.container;
  record["client"] = EscapeControl(r.client);
  record["start"] = server::StartKindName(r.start);
  record["queue_ms"] = Ms(r.queue_wait);
  record["duration_ms"] = Ms(r.duration);
  if (r.exit_status) record["exit_status"] = *r.exit_status;
  if (r.answered != 0) record["answered"] = r.answered;
  record["outcome"] = server::OutcomeName(r.outcome);
  Append(r.function, Dump(record));
}

void FunctionLogs::Refill(FunctionState& state) const {
  const auto now = steady_clock::now();
  const double rate = static_cast<double>(options_.rate_bytes);
  const double elapsed = std::chrono::duration<double>(now - state.refilled).count();
  state.tokens = std::min(rate, state.tokens + elapsed * rate);
  state.refilled = now;
}

bool FunctionLogs::Append(const std::string& function, const std::string& record) {
  if (removed_.contains(function)) return false;
  FunctionState& state = State(function);
  Refill(state);
  if (state.tokens < static_cast<double>(record.size())) {
    ++state.dropped;
    ++state.pending_drops;
    ArmDropTimer();
    return false;
  }
  state.tokens -= static_cast<double>(record.size());
  if (state.pending_drops > 0) WriteDropMarker(function, state);
  Write(function, state, record);
  return true;
}

void FunctionLogs::WriteDropMarker(const std::string& function, FunctionState& state) {
  Json marker = Head(Clock::now(), "faasd", 0);
  marker["line"] = std::to_string(state.pending_drops) + " lines dropped";
  state.pending_drops = 0;
  Write(function, state, Dump(marker));
}

void FunctionLogs::Write(const std::string& function, FunctionState& state,
                         const std::string& record) {
  const bool full = state.size + record.size() > options_.max_bytes / 2;
  if (!state.fd || (full && state.size > 0)) {
    if (auto st = Rotate(function, state); !st.ok()) {
      if (!state.broken) spdlog::warn("log of {}: {}", function, st.error().message);
      state.broken = true;
      return;
    }
  }
  if (auto st = WriteAll(state.fd.get(), record); !st.ok()) {
    if (!state.broken) spdlog::warn("log of {}: {}", function, st.error().message);
    state.broken = true;
    state.fd.Reset();  // reopened (and rotated) with the next record
    return;
  }
  state.broken = false;
  state.size += record.size();
  auto& entries = followers_->entries;
  std::vector<uint64_t> ids;
  for (const auto& [id, entry] : entries)
    if (entry.function == function) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = entries.find(id);  // an earlier follower's OnRecord may have ended this one
    if (it != entries.end() && (it->second.stream.empty() || StreamOf(record) == it->second.stream))
      it->second.follower->OnRecord(record);
  }
}

// Opens current.log; a full one becomes previous.log first.
Status FunctionLogs::Rotate(const std::string& function, FunctionState& state) {
  const std::string dir = Dir(function);
  FAAS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  const std::string current = dir + kCurrent;
  if (state.fd || state.size > 0) {
    state.fd.Reset();
    if (::rename(current.c_str(), (dir + kPrevious).c_str()) != 0 && errno != ENOENT)
      return SysError(errno, "rename " + current);
  }
  UniqueFd fd(::open(current.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return SysError(errno, "open " + current);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return SysError(errno, "stat " + current);
  // A record cut short (a full disk, a crash) ends here, not glued to the next one
  // (read through this fd, which is why it is O_RDWR).
  char last = '\n';
  if (st.st_size > 0 && ::pread(fd.get(), &last, 1, st.st_size - 1) == 1 && last != '\n')
    FAAS_RETURN_IF_ERROR(WriteAll(fd.get(), "\n"));
  state.fd = std::move(fd);
  state.size = static_cast<uint64_t>(st.st_size) + (last != '\n' ? 1 : 0);
  if (state.size >= options_.max_bytes / 2) return Rotate(function, state);
  return Ok();
}

void FunctionLogs::ArmDropTimer() {
  if (drop_timer_armed_) return;
  drop_timer_armed_ = true;
  drop_timer_.expires_after(kDropMarkerDelay);
  drop_timer_.async_wait([this](boost::system::error_code ec) {
    drop_timer_armed_ = false;
    if (!ec) FlushDropMarkers();
  });
}

// A burst that has ended gets its marker even when nothing follows it: the marker is
// written once the budget has room for it.
void FunctionLogs::FlushDropMarkers() {
  bool still = false;
  for (auto& [function, state] : functions_) {
    if (state.pending_drops == 0) continue;
    Refill(state);
    if (state.tokens >= static_cast<double>(options_.rate_bytes) / 2) {
      WriteDropMarker(function, state);
    } else {
      still = true;
    }
  }
  if (still) ArmDropTimer();
}

void FunctionLogs::OnContainerStarted(std::string_view function, bool /*pooled*/) {
  if (auto it = removed_.find(function); it != removed_.end()) removed_.erase(it);
}

void FunctionLogs::OnRemoved(const std::string& function) {
  removed_.insert(function);
  followers_->End([&](const Followers::Entry& entry) { return entry.function == function; });
  functions_.erase(function);
  if (auto st = RemoveTree(Dir(function)); !st.ok())
    spdlog::warn("remove the log of {}: {}", function, st.error().message);
}

Result<std::string> FunctionLogs::Read(const std::string& function, const LogQuery& query) const {
  const std::string dir = Dir(function);
  // Both files are bounded by max_bytes; the slack covers a record written past it.
  const size_t max = options_.max_bytes + (1 << 20);
  FAAS_ASSIGN_OR_RETURN(const std::string previous, ReadIfThere(dir + kPrevious, max));
  FAAS_ASSIGN_OR_RETURN(const std::string current, ReadIfThere(dir + kCurrent, max));
  const std::string since = query.since ? FormatTime(*query.since) : std::string();
  std::vector<std::string_view> picked;
  Pick(previous, query, since, picked);
  Pick(current, query, since, picked);
  const size_t skip = query.tail && *query.tail < picked.size() ? picked.size() - *query.tail : 0;
  std::string out;
  for (size_t i = skip; i < picked.size(); ++i) out += picked[i];
  return out;
}

std::shared_ptr<void> FunctionLogs::Follow(const std::string& function, const LogQuery& query,
                                           LogFollower* follower) {
  const uint64_t id = followers_->next_id++;
  followers_->entries[id] = {function, query.stream, follower};
  return std::make_shared<Subscription>([weak = std::weak_ptr<Followers>(followers_), id] {
    if (auto followers = weak.lock()) followers->entries.erase(id);
  });
}

void FunctionLogs::EndFollowers() {
  followers_->End([](const Followers::Entry&) { return true; });
}

uint64_t FunctionLogs::DroppedLines(const std::string& function) const {
  auto it = functions_.find(function);
  return it == functions_.end() ? 0 : it->second.dropped;
}

}  // namespace faas::logs
