#include "bench/echo_server.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace pyexec {
namespace bench {

grpc::ServerUnaryReactor* EchoService::Echo(grpc::CallbackServerContext* context,
                                            const EchoRequest* request,
                                            EchoResponse* response) {
  response->set_payload(request->payload());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// As pyexecd's PoolCallReactor: finished from the relay's I/O thread, and
// inlineable, so gRPC runs OnDone there instead of on its executor.
class RelayReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnDone() override { delete this; }
  bool InternalInlineable() override { return true; }
};

}  // namespace

grpc::ServerUnaryReactor* EchoService::Relay(grpc::CallbackServerContext* context,
                                             const EchoRequest* request,
                                             EchoResponse* response) {
  auto* reactor = new RelayReactor();
  if (relay_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                 "this echo server has no relay helpers (--relay_helpers)"));
    return reactor;
  }
  relay_->Send(request->payload(), [reactor, response](absl::StatusOr<std::string> answer) {
    if (!answer.ok()) {
      reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(answer.status().code()),
                                   std::string(answer.status().message())));
      return;
    }
    response->set_payload(*std::move(answer));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

absl::StatusOr<EchoServer> StartEchoServer(absl::string_view listen,
                                           std::unique_ptr<ProcessRelay> relay) {
  EchoServer echo;
  echo.service = std::make_unique<EchoService>(std::move(relay));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(std::string(listen),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(echo.service.get());
  echo.server = builder.BuildAndStart();
  if (echo.server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  const size_t colon = listen.rfind(':');
  echo.address = absl::StrCat(listen.substr(0, colon), ":", port);
  return echo;
}

}  // namespace bench
}  // namespace pyexec
