#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// One HTTP/1.0 exchange with 127.0.0.1:port; returns the whole reply.
std::string Fetch(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(write(fd, request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) reply.append(buf, n);
  close(fd);
  return reply;
}

TEST(MetricsHttpServerTest, ServesMetricsAndNothingElse) {
  int renders = 0;
  auto server = MetricsHttpServer::Start("127.0.0.1:0", [&renders] {
    ++renders;
    return std::string("pyexec_up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string& address = (*server)->address();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port));
  ASSERT_GT(port, 0);

  std::string ok = Fetch(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_THAT(ok, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(ok, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(ok, HasSubstr("\r\n\r\npyexec_up 1\n"));
  EXPECT_EQ(renders, 1);

  EXPECT_THAT(Fetch(port, "GET /other HTTP/1.0\r\n\r\n"), HasSubstr(" 404 Not Found"));
  EXPECT_THAT(Fetch(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
              HasSubstr(" 405 "));
  EXPECT_EQ(renders, 1);
}

TEST(MetricsHttpServerTest, RefusesABadAddress) {
  EXPECT_FALSE(MetricsHttpServer::Start("no-port", [] { return std::string(); }).ok());
}

}  // namespace
}  // namespace pyexec
