#ifndef PYEXEC_SERVER_STATUS_UTIL_H_
#define PYEXEC_SERVER_STATUS_UTIL_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace pyexec {

// Longest status message sent to clients; longer ones are cut with a marker.
inline constexpr size_t kMaxStatusMessageBytes = 4096;

// The one place an absl::Status becomes a grpc::Status: keeps the code and
// caps the message length.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_STATUS_UTIL_H_
