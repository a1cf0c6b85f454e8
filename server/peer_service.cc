#include "server/peer_service.h"

#include "server/forwarder.h"
#include "server/status_util.h"

namespace pyexec {

grpc::ServerUnaryReactor* PeerService::Locate(grpc::CallbackServerContext* context,
                                              const internal::LocateRequest* request,
                                              internal::LocateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!IsForwarded(*context)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "peers only"));
    return reactor;
  }
  if (auth_ != nullptr) {
    if (absl::StatusOr<std::string> peer = auth_->Authenticate(AuthRequestFrom(*context));
        !peer.ok()) {
      reactor->Finish(ToGrpcStatus(peer.status()));
      return reactor;
    }
  }
  response->set_held(sessions_->Holds(request->session()));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace pyexec
