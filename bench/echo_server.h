// The echo baseline server, built on the same gRPC callback API as pyexecd.

#ifndef PYEXEC_BENCH_ECHO_SERVER_H_
#define PYEXEC_BENCH_ECHO_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bench/process_relay.h"
#include "echo.grpc.pb.h"
#include "grpcpp/server.h"

namespace pyexec {
namespace bench {

// Answers Echo inline on the gRPC thread: no work, so no hand-off needed.
// Relay goes through `relay` (none: UNIMPLEMENTED).
// This class is thread-safe.
class EchoService final : public Echo::CallbackService {
 public:
  explicit EchoService(std::unique_ptr<ProcessRelay> relay = nullptr)
      : relay_(std::move(relay)) {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoRequest* request,
                                 EchoResponse* response) override;
  grpc::ServerUnaryReactor* Relay(grpc::CallbackServerContext* context,
                                  const EchoRequest* request,
                                  EchoResponse* response) override;

 private:
  const std::unique_ptr<ProcessRelay> relay_;
};

// A running echo server.
struct EchoServer {
  // The service; must outlive `server`.
  std::unique_ptr<EchoService> service;
  // The gRPC server; Shutdown() before destroying.
  std::unique_ptr<grpc::Server> server;
  // The address actually bound, "host:port" (port 0 resolved).
  std::string address;
};

// Starts an echo server on `listen` ("host:port"; port 0 picks a free port),
// relaying Relay calls through `relay` if given. UNAVAILABLE if it cannot
// bind.
absl::StatusOr<EchoServer> StartEchoServer(absl::string_view listen,
                                           std::unique_ptr<ProcessRelay> relay = nullptr);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_ECHO_SERVER_H_
