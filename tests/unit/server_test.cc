#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <string>

#include "server/reject.h"

namespace faas::server {
namespace {

TEST(RejectTest, PlainResponseIsACompleteClosingAnswer) {
  EXPECT_EQ(PlainResponse(503, "Service Unavailable", "Retry-After: 1\r\n"),
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
            "Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n");
}

// A connected TCP pair over 127.0.0.1: {client, accepted}.
std::pair<UniqueFd, UniqueFd> TcpPair() {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  return {std::move(client), std::move(accepted)};
}

// Closing a socket with unread input resets the connection, and a reset can destroy
// an answer the client has not read yet: the rejector must read the request first.
TEST(RejectTest, ClientReadsTheWholeAnswerThoughItsRequestWasNeverRead) {
  boost::asio::io_context io;
  Rejector rejector(io);
  auto [client, accepted] = TcpPair();
  const std::string request = "POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n";
  ASSERT_EQ(::send(client.get(), request.data(), request.size(), 0),
            static_cast<ssize_t>(request.size()));
  rejector.Reject(std::move(accepted), 503, "Service Unavailable", 1);
  EXPECT_EQ(rejector.lingering(), 1u);
  // The body arrives after the answer was sent.
  const std::string body(65536, 'x');
  ASSERT_EQ(::send(client.get(), body.data(), body.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(body.size()))
      << std::strerror(errno);
  io.run_for(std::chrono::milliseconds(200));
  ::shutdown(client.get(), SHUT_WR);
  std::string answer;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(client.get(), buf, sizeof buf, 0)) > 0) answer.append(buf, n);
  EXPECT_EQ(n, 0) << "connection reset: " << std::strerror(errno);
  EXPECT_EQ(answer, PlainResponse(503, "Service Unavailable", "Retry-After: 1\r\n"));
  io.run_for(std::chrono::milliseconds(200));
  EXPECT_EQ(rejector.lingering(), 0u) << "the client's end of input closes the connection";
}

TEST(RejectTest, SilentClientIsClosedAfterTheLingerTime) {
  boost::asio::io_context io;
  Rejector rejector(io);
  auto [client, accepted] = TcpPair();
  rejector.Reject(std::move(accepted), 429, "Too Many Requests", 3);
  io.run_for(Rejector::kLinger + std::chrono::milliseconds(500));
  EXPECT_EQ(rejector.lingering(), 0u);
  char buf[512];
  ssize_t n = ::recv(client.get(), buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, n).find("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n"), 0u);
}

}  // namespace
}  // namespace faas::server
