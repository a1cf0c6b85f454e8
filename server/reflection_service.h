#ifndef PYEXEC_SERVER_REFLECTION_SERVICE_H_
#define PYEXEC_SERVER_REFLECTION_SERVICE_H_

// gRPC server reflection (grpc.reflection.v1alpha and v1), so that grpcurl
// works without the .proto files.
//
// We serve our own instead of linking libgrpc++_reflection: gRPC 1.51's
// service reuses one response object for a whole stream (grpc/grpc#18009),
// so every answer after the first carries the earlier answers' files too and
// a bare `grpcurl describe` fails. Here each request gets a fresh response.

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace pyexec {

// Answers one reflection request from the generated descriptor pool.
// Shared by both protocol versions, whose messages have the same shape.
template <typename Request, typename Response>
void AnswerReflectionRequest(const std::vector<std::string>& services,
                             const Request& request, Response* response);

// Reflection over `services` (full names) and every file linked into the
// binary. Thread-safe.
class ReflectionV1AlphaService final
    : public grpc::reflection::v1alpha::ServerReflection::CallbackService {
 public:
  explicit ReflectionV1AlphaService(std::vector<std::string> services)
      : services_(std::move(services)) {}
  grpc::ServerBidiReactor<grpc::reflection::v1alpha::ServerReflectionRequest,
                          grpc::reflection::v1alpha::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

 private:
  const std::vector<std::string> services_;
};

class ReflectionV1Service final
    : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  explicit ReflectionV1Service(std::vector<std::string> services)
      : services_(std::move(services)) {}
  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

 private:
  const std::vector<std::string> services_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_REFLECTION_SERVICE_H_
