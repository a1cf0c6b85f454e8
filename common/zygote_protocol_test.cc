#include "common/zygote_protocol.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

class ZygoteProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    server_.reset(fds[0]);
    zygote_.reset(fds[1]);
  }
  absl::Time Soon() { return MonotonicNow() + absl::Seconds(5); }
  UniqueFd server_, zygote_;
};

TEST_F(ZygoteProtocolTest, ReadyAndPreloadFailure) {
  ASSERT_TRUE(WriteZygoteReady(zygote_.get(), absl::OkStatus()).ok());
  EXPECT_TRUE(ReadZygoteReady(server_.get(), Soon()).ok());
  ASSERT_TRUE(WriteZygoteReady(zygote_.get(),
                               absl::FailedPreconditionError("Traceback: boom"))
                  .ok());
  absl::Status s = ReadZygoteReady(server_.get(), Soon());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "Traceback: boom");
}

TEST_F(ZygoteProtocolTest, RequestCarriesTheSocketAndReplyThePid) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  ASSERT_TRUE(SendZygoteRequest(server_.get(), b.get(), "/tmp/pyexec-w1").ok());
  absl::StatusOr<ZygoteRequest> request = ReceiveZygoteRequest(zygote_.get());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->private_dir, "/tmp/pyexec-w1");
  UniqueFd* got = &request->socket;
  // The received descriptor is the same socket: bytes written on `a` arrive.
  ASSERT_EQ(write(a.get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(read(got->get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  ASSERT_TRUE(WriteZygoteReply(zygote_.get(), 1234).ok());
  absl::StatusOr<pid_t> pid = ReadZygoteReply(server_.get(), Soon());
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(*pid, 1234);
  ASSERT_TRUE(WriteZygoteReply(zygote_.get(), -EAGAIN).ok());
  EXPECT_EQ(ReadZygoteReply(server_.get(), Soon()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(ZygoteProtocolTest, ClosedOrSilentZygoteIsUnavailable) {
  EXPECT_EQ(ReadZygoteReply(server_.get(), MonotonicNow() + absl::Milliseconds(50))
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  zygote_.reset();
  EXPECT_EQ(ReadZygoteReply(server_.get(), Soon()).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(SendZygoteRequest(server_.get(), 0, "").ok());
}

TEST_F(ZygoteProtocolTest, ClosedServerEndsTheZygoteLoop) {
  server_.reset();
  EXPECT_EQ(ReceiveZygoteRequest(zygote_.get()).status().code(),
            absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace pyexec
