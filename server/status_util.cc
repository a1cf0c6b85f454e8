#include "server/status_util.h"

#include <string>

namespace pyexec {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    message.resize(kMaxStatusMessageBytes);
    // Do not leave half a UTF-8 character behind.
    while (!message.empty() &&
           (static_cast<unsigned char>(message.back()) & 0xC0) == 0x80) {
      message.pop_back();
    }
    if (!message.empty() && (static_cast<unsigned char>(message.back()) & 0x80)) {
      message.pop_back();
    }
    message += "...[truncated]";
  }
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

}  // namespace pyexec
