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
  // 20 names no code but is a valid value of grpc::StatusCode (an enum
  // without a fixed type holds 0..31 here); 99 was undefined behaviour
  // (UBSan, --config=asan).
  absl::Status s =
      FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

}  // namespace
}  // namespace pyexec
