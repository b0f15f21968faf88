#include "server/deploy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <chrono>
#include <optional>
#include <random>

#include "common/file.h"
#include "common/log.h"
#include "net/ip_pool.h"
#include "runtime/bundle.h"
#include "store/names.h"

namespace faas::server {

namespace asio = boost::asio;

namespace {

constexpr int kDeployPipeBytes = 1 << 20;

std::string UniqueSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::to_string(::getpid()) + "-" + std::to_string(rng() % 1000000000);
}

std::string NowRfc3339() {
  auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Error CancelledError() {
  return MakeError(Errc::kUnavailable, "called off: the client went away before the answer");
}

// Why the container of a deploy's check ended before its handler connected, with
// the last lines the runtime and the handler wrote (the runtime's error, or what the
// handler said before it exited).
Error CheckFailed(const std::string& name, const Container& check,
                  std::chrono::milliseconds connect_timeout) {
  const std::string& outcome = check.outcome();
  std::string why;
  Errc code = Errc::kBadImage;  // the container ran, its handler did not start
  if (check.ending() == Container::Ending::kConnectTimeout) {
    why = "its handler did not connect to /control.sock within " +
          std::to_string(connect_timeout.count()) + " ms";
  } else if (check.ending() == Container::Ending::kFailed) {
    why = outcome.substr(outcome.find(": ") + 2);  // "failed: WHY"
    code = Errc::kInternal;                        // faasd could not even start it
  } else {
    why = "its container ended (" + outcome + ") before the handler connected to /control.sock";
  }
  const std::string output = check.OutputSummary();
  if (!output.empty()) why += "; last output: " + output;
  return MakeError(code, "the new version of " + name + " does not start: " + why);
}

// What a deploy by reference asks for: "image" and "platform" of the options, which
// are not settings of the function (never kept for the next deploy).
struct ImageSource {
  std::optional<pull::Reference> ref;
  pull::Platform platform = pull::HostPlatform();
};

// Takes "image" and "platform" out of the options header; the rest is left for
// ParseDeployOptions, which also refuses a header that is not a JSON object.
Result<ImageSource> TakeImageSource(std::string& header) {
  ImageSource source;
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || (!json.contains("image") && !json.contains("platform"))) return source;
  if (!json.contains("image") || !json["image"].is_string()) {
    return MakeError(Errc::kInvalidArgument, json.contains("image")
                                                 ? "image: expected a reference as a string"
                                                 : "platform: only with an image reference");
  }
  FAAS_ASSIGN_OR_RETURN(source.ref, pull::ParseReference(json["image"].get<std::string>()));
  if (json.contains("platform")) {
    if (!json["platform"].is_string())
      return MakeError(Errc::kInvalidArgument, "platform: expected os/arch[/variant]");
    FAAS_ASSIGN_OR_RETURN(source.platform,
                          pull::ParsePlatform(json["platform"].get<std::string>()));
  }
  json.erase("image");
  json.erase("platform");
  header = json.dump();
  return source;
}

// Takes "ip" out of the options header: the address asked for a new function (not a
// setting: a function keeps its address).
Result<std::optional<net::Ipv4>> TakeAddress(std::string& header) {
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("ip")) return std::optional<net::Ipv4>();
  if (!json["ip"].is_string())
    return MakeError(Errc::kInvalidArgument, "ip: expected an IPv4 address as a string");
  auto ip = net::Ipv4::Parse(json["ip"].get<std::string>());
  if (!ip.ok()) return std::move(ip).error().Wrap("ip");
  json.erase("ip");
  header = json.dump();
  return std::optional<net::Ipv4>(*ip);
}

}  // namespace

struct Deployer::Job {
  std::string name;
  store::DeployOptions options;
  uint64_t previous_version = 0;  // the serving version when the deploy began; 0: none
  ImageSource image;              // a deploy by reference: what to pull
  std::optional<net::Ipv4> ip;    // the address asked for a new function
  // The serving record's, to tell an unchanged image by reference.
  std::string previous_ref, previous_manifest, previous_platform, previous_ip;
  nlohmann::json previous_options;
  std::string manifest_digest;  // what the reference resolved to
  bool unchanged = false;       // the same image and settings as the serving version
  std::shared_ptr<const api::DeployCancel> cancel;
  api::Backend::DeployDone done;
  Reserve reserve;  // none: nothing to ask before the commit
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::string work_dir;  // the spooled archive
  std::string rootfs;    // .new-*, then the version directory
  uint64_t version = 0;  // once the version directory is in place
  // Filled by the import:
  image::ImageConfig config;
  std::vector<std::string> env;  // the image's merged with the deploy's
  image::UserIds user;
  image::ImportStats stats;
  // The start check's container, until it is adopted by the function's scaler or
  // gone; its events hold the job meanwhile.
  std::shared_ptr<Container> check;
  std::optional<Error> failure;                    // why the check's container was stopped
  bool start_failed = false;                       // the check's handler did not connect
  std::chrono::steady_clock::time_point imported;  // set by the import when it succeeds
};

Deployer::Deployer(asio::io_context& io, asio::thread_pool& workers, const store::StateDir& state,
                   Functions& functions, Telemetry& telemetry, DeployerOptions options)
    : io_(io),
      workers_(workers),
      state_(state),
      functions_(functions),
      telemetry_(telemetry),
      options_(options) {
  options_.limits.ids = options_.ids;
}

void CollectLayers(image::LayerStore& layers, const store::StateDir& state) {
  for (const Error& left : layers.Collect([&state] { return state.VersionInodes(); }))
    spdlog::warn("unused layer not removed: {}", left.message);
}

// Tells the telemetry how a deploy ended: when `job` is null, it ended in Start.
void Deployer::Report(const std::string& name, const Job* job, const Status& result) const {
  auto micros = [](std::chrono::steady_clock::duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d);
  };
  DeployRecord record{.function = name};
  if (result.ok()) {
    record.outcome = DeployOutcome::kOk;
  } else if (result.error().code == Errc::kConflict) {
    record.outcome = DeployOutcome::kConflict;
  } else if (job != nullptr && job->cancel->cancelled()) {
    record.outcome = DeployOutcome::kCancelled;
  } else if (job != nullptr && job->start_failed) {
    record.outcome = DeployOutcome::kStartFailed;
  } else if (result.error().code == Errc::kBadImage) {
    record.outcome = DeployOutcome::kBadImage;
  } else {
    record.outcome = DeployOutcome::kFailed;
  }
  if (job != nullptr) {
    record.version = result.ok() ? job->version : 0;
    if (job->imported != std::chrono::steady_clock::time_point{})
      record.import = micros(job->imported - job->started);
    record.total = micros(std::chrono::steady_clock::now() - job->started);
  }
  telemetry_.OnDeploy(record);
}

Result<UniqueFd> Deployer::Start(const std::string& name, const std::string& options_header,
                                 std::shared_ptr<const api::DeployCancel> cancel,
                                 api::Backend::DeployDone done, Reserve reserve) {
  FAAS_RETURN_IF_ERROR(store::ValidateName(name));
  auto job = std::make_shared<Job>();
  job->name = name;
  job->reserve = std::move(reserve);
  // What serves now cannot change before the commit: a rollback or removal of `name`
  // is refused while its deploy is under way.
  const store::FunctionRecord* previous = functions_.registry().Find(name);
  if (previous != nullptr) {
    job->previous_version = previous->version;
    job->previous_ref = previous->image_ref;
    job->previous_manifest = previous->manifest_digest;
    job->previous_platform = previous->platform;
    job->previous_ip = previous->ip;
    job->previous_options = previous->options;
  }
  std::string header = options_header;
  FAAS_ASSIGN_OR_RETURN(job->image, TakeImageSource(header));
  FAAS_ASSIGN_OR_RETURN(job->ip, TakeAddress(header));
  if (job->ip) {
    if (previous != nullptr && previous->ip != job->ip->ToString()) {
      return MakeError(Errc::kInvalidArgument,
                       "ip: " + name + " is at " + previous->ip +
                           "; a redeploy keeps the function's address (faas rm it to move it)");
    }
    // Checked again when the function is made: another may take it meanwhile.
    if (previous == nullptr) FAAS_RETURN_IF_ERROR(functions_.CheckFreeAddress(*job->ip));
  }
  FAAS_ASSIGN_OR_RETURN(job->options, store::ParseDeployOptions(
                                          header, options_.defaults, options_.scaling,
                                          previous ? previous->options : nlohmann::json::object()));
  job->cancel = std::move(cancel);
  // `done` runs as job->done, so the job is alive then.
  job->done = [this, job = job.get(), done = std::move(done)](Result<nlohmann::json> answer) {
    Report(job->name, job, answer.ok() ? Ok() : Status(answer.error()));
    done(std::move(answer));
  };
  if (auto st = functions_.BeginDeploy(name); !st.ok()) {
    Report(name, nullptr, st);
    return std::move(st).error();
  }
  auto input = Begin(job);
  if (!input.ok()) {
    Discard(*job);
    functions_.EndDeploy(name);
    Report(name, job.get(), Status(input.error()));
    return std::move(input).error();
  }
  if (job->image.ref) {
    spdlog::info("deploy of {} started: pulling {} for {}", name, job->image.ref->String(),
                 job->image.platform.String());
  } else {
    spdlog::info("deploy of {} started", name);
  }
  return input;
}

// Makes the deploy's directories and the upload pipe, and queues the import.
Result<UniqueFd> Deployer::Begin(const std::shared_ptr<Job>& job) {
  FAAS_RETURN_IF_ERROR(state_.CreateFunctionDir(job->name));
  job->rootfs = state_.FunctionDir(job->name) + "/.new-" + UniqueSuffix();
  FAAS_RETURN_IF_ERROR(MakeDirs(job->rootfs, 0700));
  job->work_dir = state_.TmpDir() + "/import-" + job->name + "-" + UniqueSuffix();
  FAAS_RETURN_IF_ERROR(MakeDirs(job->work_dir, 0700));
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return SysError(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  if (::fcntl(write_end.get(), F_SETFL, O_NONBLOCK) != 0) return SysError(errno, "fcntl");
  // Fewer hand-offs between the API and the importer than the default 64 KiB
  // (best effort: fs.pipe-max-size may be lower).
  ::fcntl(write_end.get(), F_SETPIPE_SZ, kDeployPipeBytes);
  asio::post(workers_, [this, job, input = std::make_shared<UniqueFd>(std::move(read_end))] {
    Import(job, std::move(*input));
  });
  return write_end;
}

// On a worker.
void Deployer::Import(std::shared_ptr<Job> job, UniqueFd input) {
  // A deploy called off while it waited for a worker is not imported at all.
  Status status =
      job->cancel->cancelled() ? Status(CancelledError()) : ImportAndPrepare(*job, input.get());
  input.Reset();
  if (status.ok() && job->cancel->cancelled()) status = CancelledError();
  if (!status.ok()) return Abort(std::move(job), std::move(status).error());
  if (job->unchanged) {
    Discard(*job);
    return asio::post(io_, [this, job = std::move(job)]() mutable { Unchanged(std::move(job)); });
  }
  job->imported = std::chrono::steady_clock::now();
  spdlog::info("imported {}: {} layer(s), {} files, {} bytes in {} ms", job->name,
               job->stats.layers, job->stats.files, job->stats.rootfs_bytes,
               MillisSince(job->started));
  if (std::string skipped = image::SkippedSummary(job->stats); !skipped.empty()) {
    spdlog::warn("import of {}: {}", job->name, skipped);
  }
  const std::string work_dir = job->work_dir;
  job->work_dir.clear();
  asio::post(io_, [this, job = std::move(job)]() mutable { Commit(std::move(job)); });
  // The spooled archive (as large as the image) goes while the deploy is answered.
  (void)RemoveTree(work_dir);
}

Status Deployer::ImportAndPrepare(Job& job, int input) {
  if (job.image.ref) {
    FAAS_ASSIGN_OR_RETURN(job.config, Pull(job, input));
    if (job.unchanged) return Ok();
  } else {
    FAAS_ASSIGN_OR_RETURN(
        job.config, image::ImportImage(input, job.work_dir, job.rootfs, options_.limits, &job.stats,
                                       options_.layers));
  }
  job.env = store::MergeEnv(job.config.env, job.options.env);
  FAAS_RETURN_IF_ERROR(runtime::PrepareRootfs(job.rootfs, options_.ids.base));
  FAAS_ASSIGN_OR_RETURN(job.user,
                        image::PrepareImage(job.rootfs, job.config, job.env, options_.ids));
  return Ok();
}

// On a worker: the image of job.image.ref, unless it is what serves already (the
// same reference, manifest digest, platform and settings: then job.unchanged is set
// and nothing is fetched).
Result<image::ImageConfig> Deployer::Pull(Job& job, int input) {
  char byte;
  ssize_t n;
  while ((n = ::read(input, &byte, 1)) < 0 && errno == EINTR) {
  }
  if (n != 0) {
    return MakeError(Errc::kInvalidArgument,
                     "a deploy by image reference takes no image archive in its body");
  }
  const pull::Reference& ref = *job.image.ref;
  pull::Puller puller(ref, job.image.platform, options_.registry,
                      [cancel = job.cancel] { return cancel->cancelled(); });
  auto digest = puller.Resolve();
  if (!digest.ok()) return std::move(digest).error().Wrap("pull " + ref.String());
  job.manifest_digest = *digest;
  job.unchanged = job.previous_version != 0 && job.previous_ref == ref.String() &&
                  job.previous_manifest == *digest &&
                  job.previous_platform == job.image.platform.String() &&
                  job.previous_options == job.options.set;
  if (job.unchanged) return image::ImageConfig{};
  auto config = puller.Fetch(job.work_dir, job.rootfs, options_.limits, &job.stats,
                             options_.blob_cache, options_.layers);
  if (!config.ok()) return std::move(config).error().Wrap("pull " + ref.String());
  return config;
}

// On the loop: a deploy by reference found the serving version's image and settings.
void Deployer::Unchanged(std::shared_ptr<Job> job) {
  functions_.EndDeploy(job->name);
  job->version = job->previous_version;
  spdlog::info("deploy of {}: {} is still {}, version {} keeps serving", job->name,
               job->image.ref->String(), job->manifest_digest, job->version);
  job->done(nlohmann::json{{"name", job->name},
                           {"ip", job->previous_ip},
                           {"version", job->version},
                           {"unchanged", true},
                           {"image_ref", job->image.ref->String()},
                           {"manifest_digest", job->manifest_digest}});
}

// On the loop.
void Deployer::Commit(std::shared_ptr<Job> job) {
  // Checked again here, where the API sets it: a deploy whose client went away
  // before its commit commits nothing.
  if (job->cancel->cancelled()) return Abort(std::move(job), CancelledError());
  if (job->reserve) {
    Reserve reserve = std::move(job->reserve);
    const std::string name = job->name;
    return reserve(name, [this, job = std::move(job)](Result<net::Ipv4> ip) mutable {
      Reserved(std::move(job), std::move(ip));
    });
  }
  if (auto st = PlaceVersion(*job); !st.ok()) return Abort(std::move(job), std::move(st).error());
  if (!job->options.start_check) return Swap(std::move(job));
  StartCheck(std::move(job));
}

// On the loop: the address the function must have (a new one: where it is made; an
// existing one must be there already).
void Deployer::Reserved(std::shared_ptr<Job> job, Result<net::Ipv4> ip) {
  if (!ip.ok()) return Abort(std::move(job), std::move(ip).error());
  if (!job->previous_ip.empty() && job->previous_ip != ip->ToString()) {
    return Abort(
        std::move(job),
        MakeError(Errc::kConflict, job->name + " is at " + job->previous_ip + " here but at " +
                                       ip->ToString() + " in the cluster"));
  }
  if (job->previous_ip.empty()) {
    if (auto st = functions_.CheckFreeAddress(*ip); !st.ok())
      return Abort(std::move(job), std::move(st).error());
    job->ip = *ip;
  }
  Commit(std::move(job));
}

// The import becomes version directory vN, which is never renamed again: the start
// check runs on the tree that will serve.
Status Deployer::PlaceVersion(Job& job) {
  // A version of a removed function of the same name may still serve its last
  // requests: skip it.
  uint64_t version = functions_.registry().LatestVersion(job.name) + 1;
  struct stat st;
  while (::lstat(state_.VersionPath(job.name, version).c_str(), &st) == 0) ++version;
  const std::string version_dir = state_.VersionPath(job.name, version);
  if (::rename(job.rootfs.c_str(), version_dir.c_str()) != 0)
    return SysError(errno, "rename rootfs of " + job.name);
  job.rootfs = version_dir;
  job.version = version;
  return Ok();
}

store::FunctionRecord Deployer::RecordFor(const Job& job) const {
  return store::FunctionRecord{
      .ip = job.ip && job.previous_ip.empty() ? job.ip->ToString()
                                              : "",  // else Functions keeps or allocates it
      .rootfs = state_.RootfsPath(job.name),
      .cmd = job.config.cmd,
      .env = job.env,
      .image_env = job.config.env,
      .working_dir = job.config.working_dir,
      .user = job.config.user,
      .uid = job.user.uid,
      .gid = job.user.gid,
      .limits = job.options.limits,
      .scaling = job.options.scaling,
      .userns_base = options_.ids.base,
      .version = job.version,
      .deployed_at = NowRfc3339(),
      .image_digest = job.config.digest,
      .image_ref = job.image.ref ? job.image.ref->String() : "",
      .manifest_digest = job.manifest_digest,
      .platform = job.image.ref ? job.image.platform.String() : "",
      .options = job.options.set,
  };
}

// One container of the new version, started as a pooled one is (no client), whose
// handler must connect within the function's connect timeout before the version
// may serve. Its outcome comes back as `ready` or `done`.
void Deployer::StartCheck(std::shared_ptr<Job> job) {
  auto check = functions_.MakeCandidate(job->name, RecordFor(*job),
                                        {.done = [this, job](Instance*) { OnCheckDone(job); },
                                         .idle = {},
                                         .ready = [this, job](Instance*) { OnCheckReady(job); }});
  if (!check) return Abort(std::move(job), MakeError(Errc::kUnavailable, "faasd is shutting down"));
  job->check = check;
  check->Start();  // may end (`done`) before it returns
}

void Deployer::OnCheckReady(const std::shared_ptr<Job>& job) {
  spdlog::info("deploy of {}: container {} of version {} started in {} ms", job->name,
               job->check->id(), job->version, MillisSince(job->started));
  if (job->cancel->cancelled()) return StopCheck(*job, CancelledError());
  Swap(job);
}

// The check's container ended before its handler connected, or was stopped.
void Deployer::OnCheckDone(const std::shared_ptr<Job>& job) {
  const std::shared_ptr<Container> check = std::move(job->check);
  job->start_failed = !job->failure;
  Error error =
      job->failure ? std::move(*job->failure)
                   : CheckFailed(job->name, *check,
                                 std::chrono::milliseconds(job->options.limits.connect_timeout_ms));
  Abort(job, std::move(error));
}

// Its `done` follows, and the deploy ends with `error` once the container is gone.
void Deployer::StopCheck(Job& job, Error error) {
  job.failure = std::move(error);
  job.check->Kill("deploy failed");
}

// The new version serves: Functions swaps it in, and its scaler adopts the check's
// container. The answer waits until no pooled container of the old one is left.
void Deployer::Swap(std::shared_ptr<Job> job) {
  auto record = functions_.Commit(job->name, RecordFor(*job), job->check);
  if (!record.ok()) {
    if (job->check) return StopCheck(*job, std::move(record).error());
    return Abort(std::move(job), std::move(record).error());
  }
  job->check.reset();
  functions_.EndDeploy(job->name);
  nlohmann::json reply = {{"name", job->name}, {"ip", record->ip}, {"cmd", record->cmd}};
  if (job->image.ref) {
    reply["image_ref"] = record->image_ref;
    reply["manifest_digest"] = record->manifest_digest;
  }
  if (job->stats.skipped_devices > 0) reply["skipped"] = {{"devices", job->stats.skipped_devices}};
  if (!job->options.carried.empty()) reply["carried_over"] = CarriedOver(*job);
  functions_.AfterOldPoolGone(
      job->name, [job, reply = std::move(reply)]() mutable { job->done(std::move(reply)); });
}

// The settings taken from the version that served before: {"from_version": 3,
// "settings": ["env", "memory"], "options": {"env": [...], "memory": "256M"}}.
nlohmann::json Deployer::CarriedOver(const Job& job) {
  nlohmann::json options = nlohmann::json::object();
  for (const std::string& key : job.options.carried) options[key] = job.options.set[key];
  return {{"from_version", job.previous_version},
          {"settings", job.options.carried},
          {"options", std::move(options)}};
}

// The one way a deploy ends without a new version; from the loop or a worker. A
// refused image leaves no trace by the time it is answered.
void Deployer::Abort(std::shared_ptr<Job> job, Error error) {
  spdlog::warn("deploy of {} failed after {} ms: {}", job->name, MillisSince(job->started),
               error.message);
  auto answer = [this, job, error = std::move(error)]() mutable {
    Discard(*job);
    asio::post(io_, [this, job, error = std::move(error)]() mutable {
      functions_.EndDeploy(job->name);
      job->done(std::move(error));
    });
  };
  if (io_.get_executor().running_in_this_thread()) return asio::post(workers_, std::move(answer));
  answer();
}

void Deployer::Discard(const Job& job) const {
  if (!job.work_dir.empty()) (void)RemoveTree(job.work_dir);
  if (!job.rootfs.empty()) (void)RemoveTree(job.rootfs);
  ::rmdir(state_.FunctionDir(job.name).c_str());  // only if this deploy created it
  if (!job.rootfs.empty() && options_.layers != nullptr) CollectLayers(*options_.layers, state_);
}

}  // namespace faas::server
