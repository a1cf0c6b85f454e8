// The one place where a grpc::Status becomes an absl::Status.

#ifndef PYEXEC_CLIENTS_CPP_STATUS_UTIL_H_
#define PYEXEC_CLIENTS_CPP_STATUS_UTIL_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace pyexec {

// Converts a gRPC status into an absl::Status with the same code and message.
// The two code enums share their numbering; a code outside the known range
// becomes UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_STATUS_UTIL_H_
