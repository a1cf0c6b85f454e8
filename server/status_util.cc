#include "server/status_util.h"

#include <string>

#include "common/utf8.h"

namespace pyexec {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    message.resize(Utf8PrefixLength(message, kMaxStatusMessageBytes));
    message += "...[truncated]";
  }
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

}  // namespace pyexec
