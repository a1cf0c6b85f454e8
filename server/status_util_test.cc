#include "server/status_util.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(StatusUtilTest, KeepsCodeAndMessage) {
  grpc::Status s = ToGrpcStatus(absl::NotFoundError("gone"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "gone");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(StatusUtilTest, CapsLongMessagesOnACharacterBoundary) {
  std::string long_message;
  while (long_message.size() < 10000) long_message += "é";
  grpc::Status s = ToGrpcStatus(absl::AbortedError(long_message));
  EXPECT_LE(s.error_message().size(), kMaxStatusMessageBytes + 20);
  EXPECT_NE(s.error_message().find("[truncated]"), std::string::npos);
  // Still valid UTF-8: every 'é' is whole.
  std::string head = s.error_message().substr(0, s.error_message().find("..."));
  EXPECT_EQ(head.size() % 2, 0u);
}

}  // namespace
}  // namespace pyexec
