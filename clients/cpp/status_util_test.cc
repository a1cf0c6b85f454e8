#include "clients/cpp/status_util.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(FromGrpcStatusTest, Ok) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(FromGrpcStatusTest, KeepsCodeAndMessage) {
  struct Case {
    grpc::StatusCode grpc_code;
    absl::StatusCode absl_code;
  };
  for (const Case& c : {
           Case{grpc::StatusCode::NOT_FOUND, absl::StatusCode::kNotFound},
           Case{grpc::StatusCode::ABORTED, absl::StatusCode::kAborted},
           Case{grpc::StatusCode::DEADLINE_EXCEEDED,
                absl::StatusCode::kDeadlineExceeded},
           Case{grpc::StatusCode::RESOURCE_EXHAUSTED,
                absl::StatusCode::kResourceExhausted},
           Case{grpc::StatusCode::INVALID_ARGUMENT,
                absl::StatusCode::kInvalidArgument},
           Case{grpc::StatusCode::UNAVAILABLE, absl::StatusCode::kUnavailable},
           Case{grpc::StatusCode::CANCELLED, absl::StatusCode::kCancelled},
           Case{grpc::StatusCode::UNAUTHENTICATED,
                absl::StatusCode::kUnauthenticated},
       }) {
    absl::Status s = FromGrpcStatus(grpc::Status(c.grpc_code, "why"));
    EXPECT_EQ(s.code(), c.absl_code);
    EXPECT_EQ(s.message(), "why");
  }
}

TEST(FromGrpcStatusTest, OutOfRangeCodeIsUnknown) {
  absl::Status s =
      FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

}  // namespace
}  // namespace pyexec
