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

absl::StatusOr<EchoServer> StartEchoServer(absl::string_view listen) {
  EchoServer echo;
  echo.service = std::make_unique<EchoService>();
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
