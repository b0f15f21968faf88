#include "server/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <filesystem>
#include <optional>
#include <random>

#include "common/file.h"
#include "common/log.h"
#include "common/scope_guard.h"
#include "image/idshift.h"
#include "image/workdir.h"
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

Result<std::string> ReadToken(const std::string& path) {
  if (path.empty()) return std::string();
  FAAS_ASSIGN_OR_RETURN(std::string token, ReadFile(path, 4096));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.empty()) return MakeError(Errc::kInvalidArgument, "token file " + path + " is empty");
  return token;
}

// Removes a retired rootfs, then its function directory if that is now empty.
void RemoveRetired(const std::string& path) {
  if (auto st = RemoveTree(path); !st.ok()) spdlog::warn("remove {}: {}", path, st.error().message);
  ::rmdir(std::filesystem::path(path).parent_path().c_str());
}

Error CancelledError() {
  return MakeError(Errc::kUnavailable, "called off: the client went away before the answer");
}

nlohmann::json DeployReply(const std::string& name, const store::FunctionRecord& record) {
  return {{"name", name}, {"ip", record.ip}, {"cmd", record.cmd}};
}

}  // namespace

class Daemon::Impl : public api::Backend {
 public:
  explicit Impl(DaemonOptions options)
      : options_(std::move(options)),
        state_(std::filesystem::absolute(options_.state_dir).lexically_normal().string(),
               options_.userns ? std::optional<gid_t>(options_.userns_base) : std::nullopt),
        pool_(static_cast<size_t>(options_.workers)),
        signals_(io_, SIGTERM, SIGINT) {}

  int Run() {
    ::signal(SIGPIPE, SIG_IGN);
    if (auto st = Start(); !st.ok()) {
      spdlog::critical("cannot start: {}", st.error().message);
      return 1;
    }
    signals_.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      api_->Stop();
      functions_->Shutdown(options_.drain_timeout, [this] { io_.stop(); });
    });
    spdlog::info("faasd ready");
    RunLoop();
    pool_.join();
    spdlog::info("faasd stopped");
    return 0;
  }

  Result<UniqueFd> StartDeploy(const std::string& name, const std::string& options_header,
                               std::shared_ptr<const api::DeployCancel> cancel,
                               DeployDone done) override {
    FAAS_RETURN_IF_ERROR(store::ValidateName(name));
    FAAS_ASSIGN_OR_RETURN(
        store::DeployOptions options,
        store::ParseDeployOptions(options_header, options_.defaults, options_.scaling));
    FAAS_RETURN_IF_ERROR(functions_->BeginDeploy(name));
    ScopeGuard abort([&] { functions_->AbortDeploy(name); });
    ImportedImage image{
        name, state_.FunctionDir(name) + "/.new-" + UniqueSuffix(), {}, {}, std::move(options)};
    std::string work_dir = state_.TmpDir() + "/import-" + name + "-" + UniqueSuffix();
    FAAS_RETURN_IF_ERROR(state_.CreateFunctionDir(name));
    FAAS_RETURN_IF_ERROR(MakeDirs(image.new_rootfs, 0700));
    FAAS_RETURN_IF_ERROR(MakeDirs(work_dir, 0700));
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return SysError(errno, "pipe");
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    ::fcntl(write_end.get(), F_SETFL, O_NONBLOCK);
    // Fewer hand-offs between the API and the importer than the default 64 KiB
    // (best effort: fs.pipe-max-size may be lower).
    ::fcntl(write_end.get(), F_SETPIPE_SZ, kDeployPipeBytes);
    abort.Dismiss();
    spdlog::info("deploy of {} started", name);
    asio::post(pool_, [this, image = std::move(image), work_dir, cancel = std::move(cancel),
                       done = std::move(done),
                       input = std::make_shared<UniqueFd>(std::move(read_end))]() mutable {
      ImportOnWorker(std::move(image), work_dir, std::move(*input), std::move(cancel),
                     std::move(done));
    });
    return write_end;
  }

  Result<nlohmann::json> Describe(const std::string& name) override {
    const auto* record = functions_->registry().Find(name);
    if (!record) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    nlohmann::json out = store::ToJson(*record);
    out["name"] = name;
    if (auto stats = functions_->RuntimeStats(name); stats.ok()) out["runtime"] = *stats;
    return out;
  }

  // Library code should never throw into the loop; if it does, the daemon logs it
  // and keeps serving rather than dropping every request in flight.
  void RunLoop() {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::critical("unexpected exception in the event loop: {}", e.what());
      }
    }
  }

  Result<nlohmann::json> GetIp(const std::string& name) override {
    const auto* record = functions_->registry().Find(name);
    if (!record) return MakeError(Errc::kNotFound, "no function named '" + name + "'");
    return nlohmann::json{{"name", name}, {"ip", record->ip}};
  }

  nlohmann::json List() override { return functions_->registry().ToJson(); }

  std::vector<std::string> Degraded() override {
    std::vector<std::string> reasons;
    for (const auto& name : functions_->PausedListeners())
      reasons.push_back("the listener of " + name +
                        " is paused: accept failed (out of fds or memory)");
    return reasons;
  }

  Result<nlohmann::json> Remove(const std::string& name) override {
    FAAS_RETURN_IF_ERROR(functions_->Remove(name));
    return nlohmann::json{{"name", name}};
  }

 private:
  Status Start() {
    FAAS_RETURN_IF_ERROR(state_.Create());
    // With a user namespace a container's root is an unprivileged host user: it must
    // traverse to its bundle's control socket (its group may search, nobody else).
    const std::string bundles = state_.BundlesDir();
    if (options_.userns && ::chown(bundles.c_str(), 0, options_.userns_base) != 0)
      return SysError(errno, "chown " + bundles);
    if (::chmod(bundles.c_str(), options_.userns ? 0710 : 0700) != 0)
      return SysError(errno, "chmod " + bundles);
    FAAS_RETURN_IF_ERROR(MakeDirs(options_.run_dir));
    ::chmod(options_.run_dir.c_str(), 0700);
    FAAS_ASSIGN_OR_RETURN(std::string token, ReadToken(options_.token_file));
    auto fopts = options_.functions;
    if (fopts.runtime.runtime_root.empty()) fopts.runtime.runtime_root = options_.run_dir + "/runc";
    fopts.runtime.bundles_dir = state_.BundlesDir();
    functions_ = std::make_unique<Functions>(io_, state_, fopts, [this](std::string path) {
      asio::post(pool_, [path = std::move(path)] { RemoveRetired(path); });
    });
    FAAS_RETURN_IF_ERROR(functions_->Start());
    api::Options api_options;
    api_options.unix_path =
        options_.socket.empty() ? options_.run_dir + "/faasd.sock" : options_.socket;
    api_options.tcp_listen = options_.listen_tcp;
    api_options.token = token;
    api_options.max_image_bytes = options_.limits.max_image_bytes;
    api_options.idle_timeout = options_.api_timeout;
    api_ = std::make_unique<api::Server>(io_, *this, api_options);
    return api_->Start();
  }

  // Runs on a worker thread.
  Status Import(int input, const std::string& work_dir, ImportedImage* image,
                image::ImportStats* stats) {
    FAAS_ASSIGN_OR_RETURN(image->config, image::ImportImage(input, work_dir, image->new_rootfs,
                                                            options_.limits, stats));
    FAAS_ASSIGN_OR_RETURN(image->user, image::ResolveUser(image->new_rootfs, image->config.user));
    FAAS_RETURN_IF_ERROR(
        image::CheckCommand(image->new_rootfs, image->config.cmd,
                            store::MergeEnv(image->config.env, image->options.env)));
    FAAS_RETURN_IF_ERROR(image::PrepareWorkingDir(image->new_rootfs, image->config.working_dir));
    FAAS_RETURN_IF_ERROR(runtime::PrepareRootfs(image->new_rootfs));
    // The import was root's alone; as the container's `/` it needs the usual mode, or
    // a handler that is not root could not traverse it.
    if (::chmod(image->new_rootfs.c_str(), 0755) != 0)
      return SysError(errno, "chmod " + image->new_rootfs);
    if (options_.userns) {
      if (image->user.uid >= runtime::kUsernsSize || image->user.gid >= runtime::kUsernsSize)
        return MakeError(Errc::kBadImage, "the image's user " + image->config.user +
                                              " is outside the user namespace's ids");
      FAAS_RETURN_IF_ERROR(
          image::ShiftOwnership(image->new_rootfs, options_.userns_base, runtime::kUsernsSize));
      image->userns_base = options_.userns_base;
    }
    return Ok();
  }

  // Runs on a worker thread; hands the outcome to FinishDeploy on the loop.
  void ImportOnWorker(ImportedImage image, const std::string& work_dir, UniqueFd input,
                      std::shared_ptr<const api::DeployCancel> cancel, DeployDone done) {
    auto start = std::chrono::steady_clock::now();
    image::ImportStats stats;
    // A deploy called off while it waited for a worker is not imported at all.
    Status status = cancel->cancelled() ? Status(CancelledError())
                                        : Import(input.get(), work_dir, &image, &stats);
    input.Reset();
    if (status.ok() && cancel->cancelled()) status = CancelledError();
    const bool ok = status.ok();
    if (!ok) {
      // A refused image leaves no trace by the time it is answered.
      (void)RemoveTree(work_dir);
      (void)RemoveTree(image.new_rootfs);
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    asio::post(io_, [this, image = std::move(image), status = std::move(status), stats, ms,
                     cancel = std::move(cancel), done = std::move(done)]() mutable {
      FinishDeploy(std::move(image), std::move(status), *cancel, stats, ms, std::move(done));
    });
    // The spooled archive (as large as the image) goes while the deploy is answered.
    if (ok) (void)RemoveTree(work_dir);
  }

  void FinishDeploy(ImportedImage image, Status status, const api::DeployCancel& cancel,
                    const image::ImportStats& stats, long ms, DeployDone done) {
    const std::string name = image.name;
    // Checked again here, where the API sets it: a deploy whose client went away
    // before its commit commits nothing.
    if (status.ok() && cancel.cancelled()) {
      (void)RemoveTree(image.new_rootfs);
      status = CancelledError();
    }
    if (!status.ok()) {
      functions_->AbortDeploy(name);
      ::rmdir(state_.FunctionDir(name).c_str());  // only if this deploy created it
      spdlog::warn("deploy of {} failed after {} ms: {}", name, ms, status.error().message);
      return done(std::move(status).error());
    }
    spdlog::info("imported {}: {} layer(s), {} files, {} bytes in {} ms", name, stats.layers,
                 stats.files, stats.rootfs_bytes, ms);
    auto record = functions_->CommitDeploy(std::move(image));
    if (!record.ok()) {
      spdlog::warn("deploy of {} failed: {}", name, record.error().message);
      return done(std::move(record).error());
    }
    // The answer says the new version serves: no pooled container of the old one is left.
    functions_->AfterOldPoolGone(
        name, [done = std::move(done), reply = DeployReply(name, *record)]() mutable {
          done(std::move(reply));
        });
  }

  DaemonOptions options_;
  store::StateDir state_;
  asio::io_context io_;
  asio::thread_pool pool_;
  asio::signal_set signals_;
  std::unique_ptr<Functions> functions_;
  std::unique_ptr<api::Server> api_;
};

Daemon::Daemon(DaemonOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Daemon::~Daemon() = default;
int Daemon::Run() { return impl_->Run(); }

}  // namespace faas::server
