#include "server/peer_service.h"

#include "server/forwarder.h"
#include "server/status_util.h"

namespace pyexec {

bool PeerService::FromPeer(grpc::CallbackServerContext* context,
                           grpc::ServerUnaryReactor* reactor) const {
  absl::Status peer = !IsForwarded(*context)
                          ? absl::UnauthenticatedError("only a peer replica may make this call")
                      : auth_ != nullptr ? auth_->AuthenticatePeer(AuthRequestFrom(*context))
                                         : absl::OkStatus();
  if (!peer.ok()) reactor->Finish(ToGrpcStatus(peer));
  return peer.ok();
}

grpc::ServerUnaryReactor* PeerService::Locate(grpc::CallbackServerContext* context,
                                              const internal::LocateRequest* request,
                                              internal::LocateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!FromPeer(context, reactor)) return reactor;
  response->set_held(sessions_->Holds(request->session()));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::Room(grpc::CallbackServerContext* context,
                                            const internal::RoomRequest* request,
                                            internal::RoomResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!FromPeer(context, reactor)) return reactor;
  response->set_bindable_workers(room_());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace pyexec
