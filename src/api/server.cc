#include "api/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <optional>
#include <type_traits>
#include <variant>

#include "api/handlers.h"
#include "api/log_route.h"
#include "api/push_route.h"
#include "common/log.h"

namespace faas::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {

// A client gets this long to send a request's headers (and a small body with them):
// a slow-loris client cannot hold a connection for long.
constexpr auto kHeaderTimeout = std::chrono::seconds(15);
// A TCP client that has not yet sent an authorized request gets less: a flood of
// idle connections from anyone who can reach the port is shed quickly.
constexpr auto kFirstTcpHeaderTimeout = std::chrono::seconds(5);
// A metrics client (a scraper) gets as long for each request and each answer.
constexpr auto kMetricsTimeout = std::chrono::seconds(5);
constexpr auto kLinger = std::chrono::seconds(2);
constexpr size_t kChunk = 256 << 10;
constexpr size_t kReadRoom = 64 << 10;
constexpr uint64_t kMaxSmallBody = 64 << 10;
// A log follower that lets this much output wait unread is dropped (its connection
// closed): a reader that stops reading cannot grow faasd's memory.
constexpr size_t kMaxFollowPending = 1 << 20;

// Lets the server close live sessions on shutdown whatever their socket type.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Shutdown() = 0;
};

using SessionList = std::vector<std::weak_ptr<SessionBase>>;

template <typename Socket>
class Session : public SessionBase,
                public logs::LogFollower,
                public std::enable_shared_from_this<Session<Socket>> {
  static constexpr bool kTcp = std::is_same_v<Socket, asio::ip::tcp::socket>;

 public:
  // `metrics_only`: a session of the metrics listener (GET /metrics alone, no token).
  Session(Socket socket, Backend& backend, const Options& options, bool metrics_only)
      : socket_(std::move(socket)),
        backend_(backend),
        options_(options),
        metrics_only_(metrics_only),
        timer_(socket_.get_executor()),
        pipe_(socket_.get_executor()) {}

  void Start() { ReadHeader(); }

  // Closing the socket fails the pending read; an upload in progress then closes
  // its pipe, so the import ends and the daemon can finish shutting down.
  void Shutdown() override {
    if (subscription_) return OnEnd();  // a followed log ends with its last chunk
    error_code ignored;
    socket_.cancel(ignored);
    Close();
  }

 private:
  template <typename Duration>
  void ArmTimer(Duration timeout) {
    timer_.expires_after(timeout);
    timer_.async_wait([self = this->shared_from_this()](error_code ec) {
      if (!ec) self->Close();
    });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(options_.max_header_bytes));
    parser_->body_limit(options_.max_image_bytes);
    if (metrics_only_) {
      ArmTimer(kMetricsTimeout);
    } else if (kTcp && !authorized_once_) {
      ArmTimer(kFirstTcpHeaderTimeout);
    } else {
      ArmTimer(kHeaderTimeout);
    }
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(error_code ec) {
    if (ec) {
      if (ec == http::error::header_limit)
        return Respond(431, ErrorJson("request header too large"), false);
      if (ec == http::error::body_limit)  // a Content-Length over the limit
        return Respond(413, ErrorJson(TooLargeMessage()), false);
      if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
          ec != asio::error::eof)
        spdlog::debug("api: read header: {}", ec.message());
      return Close();
    }
    const auto& req = parser_->get();
    if (!Authorized(req)) return Respond(401, ErrorJson("missing or wrong bearer token"), false);
    if (kTcp && !metrics_only_ && options_.token.empty() &&
        !IsLoopbackHost(std::string(req[http::field::host])))
      return Respond(403, ErrorJson(kForeignHostMessage), false);
    authorized_once_ = true;
    if (!metrics_only_ && req.target() == "/api/new") {
      if (req.method() == http::verb::post) return StartDeploy();
      return Respond(405, ErrorJson("method not allowed: deploy with POST"), false);
    }
    if (parser_->content_length() && *parser_->content_length() > kMaxSmallBody)
      return Respond(413, ErrorJson("request body too large"), false);
    DrainSmallBody();
  }

  // The unix socket (mode 0600) is root's: only TCP clients need the token, and the
  // metrics listener has none.
  bool Authorized(const http::request<http::buffer_body>& req) const {
    if (!kTcp || metrics_only_ || options_.token.empty()) return true;
    auto it = req.find(http::field::authorization);
    return it != req.end() && it->value() == "Bearer " + options_.token;
  }

  // Requests other than a deploy carry no useful body; read and drop it. The header's
  // deadline still runs: header and body together must come within it.
  void DrainSmallBody() {
    if (parser_->is_done()) return Dispatch();
    auto& body = parser_->get().body();
    body.data = chunk_.data();
    body.size = chunk_.size();
    http::async_read_some(
        socket_, buffer_, *parser_, [self = this->shared_from_this()](error_code ec, size_t) {
          if (ec && ec != http::error::need_buffer) return self->Close();
          self->drained_ += self->chunk_.size() - self->parser_->get().body().size;
          if (self->drained_ > kMaxSmallBody)
            return self->Respond(413, ErrorJson("request body too large"), false);
          self->DrainSmallBody();
        });
  }

  void Dispatch() {
    const auto& req = parser_->get();
    const std::string target(req.target());
    if (!metrics_only_) {
      if (auto logs = ParseLogsRequest(req.method(), target, logs::Clock::now()))
        return ServeLogs(std::move(*logs), req.keep_alive());
      if (auto push = ParsePushRequest(req.method(), target)) return StartPush(std::move(*push));
    }
    Reply reply = metrics_only_ ? RouteMetricsOnly(backend_, req.method(), target)
                                : Route(backend_, req.method(), target);
    if (reply.later) {
      return reply.later([self = this->shared_from_this(),
                          keep_alive = req.keep_alive()](Result<nlohmann::json> result) {
        Reply answer = ReplyFor(std::move(result));
        self->Respond(answer.status, answer.body, keep_alive);
      });
    }
    if (reply.text)
      return Send(reply.status, reply.content_type, std::move(*reply.text), req.keep_alive());
    Respond(reply.status, reply.body, req.keep_alive());
  }

  // A push answers when it has ended, as a deploy does once its body is in: a client
  // that hangs up meanwhile calls it off.
  void StartPush(std::variant<Reply, PushRequest> request) {
    const bool keep_alive = parser_->get().keep_alive();
    if (const auto* reply = std::get_if<Reply>(&request))
      return Respond(reply->status, reply->body, keep_alive);
    auto& push = std::get<PushRequest>(request);
    auto self = this->shared_from_this();
    cancel_ = std::make_shared<DeployCancel>();
    operation_ = "push of " + push.name;
    Status started = backend_.StartPush(push.name, push.image, push.version, cancel_,
                                        [self](Result<nlohmann::json> result) {
                                          self->deploy_result_.emplace(std::move(result));
                                          self->MaybeFinishDeploy();
                                        });
    if (!started.ok()) {
      cancel_.reset();
      const Error& e = started.error();
      return Respond(HttpStatusFor(e.code), ErrorJson(e.message), keep_alive);
    }
    body_complete_ = true;
    timer_.cancel();
    WatchForHangup();
  }

  void StartDeploy() {
    std::string name(parser_->get()[kImageNameHeader]);
    std::string options(parser_->get()[kFunctionOptionsHeader]);
    auto self = this->shared_from_this();
    cancel_ = std::make_shared<DeployCancel>();
    operation_ = "deploy of " + name;
    auto pipe = backend_.StartDeploy(name, options, cancel_, [self](Result<nlohmann::json> result) {
      self->deploy_result_.emplace(std::move(result));
      self->MaybeFinishDeploy();
    });
    if (!pipe.ok()) {
      cancel_.reset();
      const Error& e = pipe.error();
      return Respond(HttpStatusFor(e.code), ErrorJson(e.message), false);
    }
    pipe_.assign(pipe->Release());
    auto expect = parser_->get().find(http::field::expect);
    if (expect == parser_->get().end() || !beast::iequals(expect->value(), "100-continue"))
      return PumpBody();
    // curl waits a second for this before sending a large body.
    static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(kContinue, sizeof kContinue - 1),
                      [self = this->shared_from_this()](error_code ec, size_t) {
                        if (ec) return self->ClientGone();
                        self->PumpBody();
                      });
  }

  // Moves the body into the importer's pipe as it arrives: constant memory, and the
  // pipe's back-pressure slows the client down to the importer's pace. The idle
  // timer runs only while waiting for the client, and any bytes restart it.
  void PumpBody() {
    if (parser_->is_done()) {
      body_complete_ = true;
      ClosePipe();
      WatchForHangup();
      return MaybeFinishDeploy();
    }
    auto& body = parser_->get().body();
    body.data = chunk_.data();
    body.size = chunk_.size();
    // Beast reads as much as the buffer has room for (at most 64 KiB): without
    // room it reads the body 512 bytes at a time.
    if (buffer_.capacity() < kReadRoom) buffer_.reserve(kReadRoom);
    ArmTimer(options_.idle_timeout);
    http::async_read_some(
        socket_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnBodyChunk(ec); });
  }

  void OnBodyChunk(error_code ec) {
    timer_.cancel();
    if (ec && ec != http::error::need_buffer) {
      if (ec == http::error::body_limit) {
        body_error_ = Reply{413, ErrorJson(TooLargeMessage())};
        ClosePipe();  // the importer sees a truncated stream and fails
        return MaybeFinishDeploy();
      }
      spdlog::warn("api: upload broken: {}", ec.message());
      return ClientGone();
    }
    size_t n = chunk_.size() - parser_->get().body().size;
    if (n == 0 || !pipe_.is_open()) return PumpBody();
    asio::async_write(pipe_, asio::buffer(chunk_.data(), n),
                      [self = this->shared_from_this()](error_code ec, size_t) {
                        // EPIPE: the importer stopped reading (done or failed); keep
                        // reading the body so the client gets a clean answer.
                        if (ec) self->ClosePipe();
                        self->PumpBody();
                      });
  }

  // With the whole image sent, the client only waits for the answer; one that
  // hangs up (or shuts down its sending side) meanwhile is taken as gone, and its
  // deploy is called off.
  void WatchForHangup() {
    socket_.async_wait(Socket::wait_read, [self = this->shared_from_this()](error_code ec) {
      if (ec || !self->AwaitingDeploy()) return;
      char byte;
      ssize_t n = ::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return self->ClientGone();
      if (n < 0) return self->WatchForHangup();
      // A pipelined request: it is read after the answer.
    });
  }

  bool AwaitingDeploy() const { return body_complete_ && !deploy_result_ && !client_gone_; }

  std::string TooLargeMessage() const {
    return "image larger than the limit of " + std::to_string(options_.max_image_bytes) + " bytes";
  }

  void ClosePipe() {
    error_code ignored;
    pipe_.close(ignored);
  }

  void ClientGone() {
    client_gone_ = true;
    Close();
  }

  void MaybeFinishDeploy() {
    if (!deploy_result_) return;
    if (client_gone_) return Close();
    if (body_error_) return Respond(body_error_->status, body_error_->body, false);
    if (!body_complete_) return;
    auto& result = *deploy_result_;
    if (result.ok()) return Respond(200, result.value(), parser_->get().keep_alive());
    return Respond(HttpStatusFor(result.error().code), ErrorJson(result.error().message), false);
  }

  void Respond(int status, const nlohmann::json& body, bool keep_alive) {
    Send(status, "application/json", DumpJson(body) + "\n", keep_alive);
  }

  void Send(int status, const std::string& content_type, std::string body, bool keep_alive) {
    timer_.cancel();
    // A scraper that does not read its answer cannot hold one of the few slots.
    if (metrics_only_) ArmTimer(kMetricsTimeout);
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<unsigned>(status));
    res->version(11);
    res->set(http::field::server, "faasd");
    res->set(http::field::content_type, content_type);
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(socket_, *res,
                      [self = this->shared_from_this(), res, keep_alive](error_code ec, size_t) {
                        if (ec) return self->Close();
                        if (!keep_alive) return self->Linger();
                        self->ResetForNext();
                        self->ReadHeader();
                      });
  }

  void ResetForNext() {
    cancel_.reset();
    deploy_result_.reset();
    body_error_.reset();
    body_complete_ = false;
    client_gone_ = false;
    drained_ = 0;
  }

  // Closing with unread input resets the connection, which can destroy the answer
  // before the client read it (a refused deploy whose image is still arriving): end
  // our side, then read and drop what still comes, for at most kLinger.
  void Linger() {
    ClosePipe();
    error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    ArmTimer(kLinger);
    Discard();
  }

  void Discard() {
    socket_.async_read_some(asio::buffer(chunk_),
                            [self = this->shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->Close();
                              self->Discard();
                            });
  }

  void ServeLogs(std::variant<Reply, LogsRequest> request, bool keep_alive) {
    if (const auto* reply = std::get_if<Reply>(&request))
      return Respond(reply->status, reply->body, keep_alive);
    const auto& [name, query] = std::get<LogsRequest>(request);
    auto answer = backend_.Logs(name, query, query.follow ? this : nullptr);
    if (!answer.ok())
      return Respond(HttpStatusFor(answer.error().code), ErrorJson(answer.error().message),
                     keep_alive);
    if (!query.follow) return Send(200, kNdjson, std::move(answer->records), keep_alive);
    timer_.cancel();
    subscription_ = std::move(answer->subscription);
    follow_pending_ = std::string("HTTP/1.1 200 OK\r\nServer: faasd\r\nContent-Type: ") + kNdjson +
                      "\r\nTransfer-Encoding: chunked\r\n\r\n" + Chunk(answer->records);
    // A follower sends nothing more: readable means it closed (or broke the protocol).
    socket_.async_wait(Socket::wait_read, [self = this->shared_from_this()](error_code ec) {
      if (ec != asio::error::operation_aborted) self->Close();
    });
    WriteFollow();
  }

  void OnRecord(std::string_view record) override {
    if (follow_ended_) return;
    follow_pending_ += Chunk(record);
    if (follow_pending_.size() > kMaxFollowPending) {
      spdlog::warn("api: a log follower left {} bytes unread: dropping it", follow_pending_.size());
      return Close();
    }
    WriteFollow();
  }

  void OnEnd() override {
    if (follow_ended_) return;
    follow_ended_ = true;
    follow_pending_ += kEndOfChunks;
    ArmTimer(kLinger);  // the last chunk gets this long to go
    WriteFollow();
  }

  void WriteFollow() {
    if (follow_writing_ || !socket_.is_open()) return;
    if (follow_pending_.empty()) {
      if (follow_ended_) Close();
      return;
    }
    follow_writing_ = true;
    follow_sending_ = std::move(follow_pending_);
    follow_pending_.clear();
    asio::async_write(socket_, asio::buffer(follow_sending_),
                      [self = this->shared_from_this()](error_code ec, size_t) {
                        self->follow_writing_ = false;
                        if (ec) return self->Close();
                        self->WriteFollow();
                      });
  }

  // Nobody will read the answer of a deploy still under way: it must not commit.
  void Close() {
    if (cancel_ && !deploy_result_ && !cancel_->cancelled()) {
      spdlog::info("api: the client of the {} is gone: calling it off", operation_);
      cancel_->Cancel();
    }
    timer_.cancel();
    ClosePipe();
    subscription_.reset();
    error_code ignored;
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  Socket socket_;
  Backend& backend_;
  const Options& options_;
  const bool metrics_only_;
  asio::steady_timer timer_;
  asio::posix::stream_descriptor pipe_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::buffer_body>> parser_;
  std::array<char, kChunk> chunk_{};
  std::shared_ptr<DeployCancel> cancel_;
  std::string operation_;  // "deploy of NAME", "push of NAME": for the log
  std::optional<Result<nlohmann::json>> deploy_result_;
  std::optional<Reply> body_error_;
  bool body_complete_ = false;
  bool client_gone_ = false;
  bool authorized_once_ = false;
  uint64_t drained_ = 0;
  // A followed log: the store's subscription, what waits to be sent, what is being sent.
  static constexpr char kNdjson[] = "application/x-ndjson";
  std::shared_ptr<void> subscription_;
  std::string follow_pending_, follow_sending_;
  bool follow_writing_ = false;
  bool follow_ended_ = false;
};

// One listening socket with its own sessions and cap: a flood on one listener
// cannot take the connections of another.
template <typename Acceptor>
struct Listener {
  Listener(asio::io_context& io, const char* what) : acceptor(io), name(what), pause(io) {}

  void Close() {
    error_code ignored;
    acceptor.close(ignored);
    pause.cancel();
    for (auto& weak : sessions) {
      if (auto session = weak.lock()) session->Shutdown();
    }
    sessions.clear();
  }

  Acceptor acceptor;
  const char* name;
  // After a failed accept (out of fds, say) the next waits this long: retrying at
  // once would spin, the connection stays in the backlog meanwhile.
  asio::steady_timer pause;
  std::chrono::steady_clock::time_point last_error_log{};
  size_t cap = 0;
  bool metrics_only = false;  // the metrics listener's sessions answer GET /metrics alone
  SessionList sessions;
  bool refusing = false;  // logs once per episode of being full, not per connection
};

constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr auto kAcceptErrorLogInterval = std::chrono::seconds(10);

template <typename Acceptor>
void AcceptLoop(Listener<Acceptor>& listener, Backend& backend, const Options& options) {
  listener.acceptor.async_accept([&listener, &backend, &options](error_code ec, auto socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      using SocketType = decltype(socket);
      auto session = std::make_shared<Session<SocketType>>(std::move(socket), backend, options,
                                                           listener.metrics_only);
      auto& sessions = listener.sessions;
      std::erase_if(sessions, [](const auto& weak) { return weak.expired(); });
      if (sessions.size() >= listener.cap) {
        if (!listener.refusing)
          spdlog::warn("api: {} connections open on the {} socket, refusing more", sessions.size(),
                       listener.name);
        listener.refusing = true;
        session->Shutdown();
      } else {
        listener.refusing = false;
        sessions.push_back(session);
        session->Start();
      }
    } else {
      auto now = std::chrono::steady_clock::now();
      if (now - listener.last_error_log >= kAcceptErrorLogInterval) {
        spdlog::warn("api: accept on the {} socket: {}; pausing it for {} ms", listener.name,
                     ec.message(), kAcceptPause.count());
        listener.last_error_log = now;
      }
      listener.pause.expires_after(kAcceptPause);
      listener.pause.async_wait([&listener, &backend, &options](error_code wait_ec) {
        if (!wait_ec) AcceptLoop(listener, backend, options);
      });
      return;
    }
    AcceptLoop(listener, backend, options);
  });
}

Result<asio::ip::tcp::endpoint> ParseTcp(const std::string& spec) {
  auto colon = spec.rfind(':');
  if (colon == std::string::npos)
    return MakeError(Errc::kInvalidArgument, "expected HOST:PORT, got '" + spec + "'");
  std::string host = spec.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')  // [::1]:PORT
    host = host.substr(1, host.size() - 2);
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return MakeError(Errc::kInvalidArgument, "bad address in '" + spec + "'");
  int port = 0;
  try {
    port = std::stoi(spec.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port <= 0 || port > 65535)
    return MakeError(Errc::kInvalidArgument, "bad port in '" + spec + "'");
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port));
}

// Opens, binds and listens on `endpoint` (`spec` as given, for the error).
Status ListenOn(asio::ip::tcp::acceptor& acceptor, const asio::ip::tcp::endpoint& endpoint,
                const std::string& spec) {
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && endpoint.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return MakeError(Errc::kIo, "listen on " + spec + ": " + ec.message());
  return Ok();
}

}  // namespace

Status CheckListenAddress(const std::string& spec) {
  auto endpoint = ParseTcp(spec);
  if (!endpoint.ok()) return std::move(endpoint).error();
  return Ok();
}

class Server::Impl {
 public:
  Impl(asio::io_context& io, Backend& backend, Options options)
      : backend_(backend),
        options_(std::move(options)),
        unix_(io, "unix"),
        tcp_(io, "TCP"),
        metrics_(io, "metrics") {
    unix_.cap = options_.max_unix_connections;
    tcp_.cap = options_.max_tcp_connections;
    metrics_.cap = options_.max_metrics_connections;
    metrics_.metrics_only = true;
  }

  Status Start() {
    if (!options_.unix_path.empty()) FAAS_RETURN_IF_ERROR(ListenUnix());
    if (!options_.tcp_listen.empty()) FAAS_RETURN_IF_ERROR(ListenTcp());
    if (!options_.metrics_listen.empty()) FAAS_RETURN_IF_ERROR(ListenMetrics());
    return Ok();
  }

  void Stop() {
    unix_.Close();
    tcp_.Close();
    metrics_.Close();
    if (!options_.unix_path.empty()) ::unlink(options_.unix_path.c_str());
  }

 private:
  Status ListenUnix() {
    ::unlink(options_.unix_path.c_str());
    error_code ec;
    mode_t old = ::umask(0177);
    auto& acceptor = unix_.acceptor;
    acceptor.open(asio::local::stream_protocol(), ec);
    if (!ec) acceptor.bind(asio::local::stream_protocol::endpoint(options_.unix_path), ec);
    ::umask(old);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return MakeError(Errc::kIo, "listen on " + options_.unix_path + ": " + ec.message());
    ::chmod(options_.unix_path.c_str(), 0600);
    AcceptLoop(unix_, backend_, options_);
    spdlog::info("control API on unix:{}", options_.unix_path);
    return Ok();
  }

  Status ListenTcp() {
    FAAS_ASSIGN_OR_RETURN(auto endpoint, ParseTcp(options_.tcp_listen));
    if (!endpoint.address().is_loopback() && options_.token.empty())
      return MakeError(Errc::kInvalidArgument,
                       "--listen-tcp on a non-loopback address needs --token-file");
    FAAS_RETURN_IF_ERROR(ListenOn(tcp_.acceptor, endpoint, options_.tcp_listen));
    AcceptLoop(tcp_, backend_, options_);
    if (options_.token.empty()) {
      spdlog::warn(
          "control API on tcp:{} without a token: every local user and process can deploy, "
          "remove and read every function's env (use --token-file)",
          options_.tcp_listen);
    } else {
      spdlog::info("control API on tcp:{} (token required)", options_.tcp_listen);
    }
    return Ok();
  }

  Status ListenMetrics() {
    const std::string& spec = options_.metrics_listen;
    FAAS_ASSIGN_OR_RETURN(auto endpoint, ParseTcp(spec));
    FAAS_RETURN_IF_ERROR(ListenOn(metrics_.acceptor, endpoint, spec));
    AcceptLoop(metrics_, backend_, options_);
    if (endpoint.address().is_loopback()) {
      spdlog::info("metrics on http://{}/metrics", spec);
    } else {
      spdlog::info(
          "metrics on http://{}/metrics, without a token: whoever reaches it can read them", spec);
    }
    return Ok();
  }

  Backend& backend_;
  Options options_;
  Listener<asio::local::stream_protocol::acceptor> unix_;
  Listener<asio::ip::tcp::acceptor> tcp_;
  Listener<asio::ip::tcp::acceptor> metrics_;
};

Server::Server(asio::io_context& io, Backend& backend, Options options)
    : impl_(std::make_unique<Impl>(io, backend, std::move(options))) {}
Server::~Server() = default;
Status Server::Start() { return impl_->Start(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace faas::api
