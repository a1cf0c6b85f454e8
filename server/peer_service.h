#ifndef PYEXEC_SERVER_PEER_SERVICE_H_
#define PYEXEC_SERVER_PEER_SERVICE_H_

// The Peer service (proto/pyexec/v1/peer.proto): what replicas ask each
// other. Only a peer may call it: a call must be marked forwarded and carry
// the peer proof the Authenticator checks (the peer secret or an mTLS peer
// certificate); anything else is UNAUTHENTICATED.

#include <functional>

#include "pyexec/v1/peer.grpc.pb.h"
#include "server/auth.h"
#include "server/session_table.h"

namespace pyexec {

class PeerService final : public internal::Peer::CallbackService {
 public:
  // Both must outlive it; `auth` may be null (authentication off).
  // `room` says how many more sessions this replica can take.
  PeerService(const SessionTable* sessions, const Authenticator* auth,
              std::function<uint32_t()> room)
      : sessions_(sessions), auth_(auth), room_(std::move(room)) {}

  grpc::ServerUnaryReactor* Locate(grpc::CallbackServerContext* context,
                                   const internal::LocateRequest* request,
                                   internal::LocateResponse* response) override;
  grpc::ServerUnaryReactor* Room(grpc::CallbackServerContext* context,
                                 const internal::RoomRequest* request,
                                 internal::RoomResponse* response) override;

 private:
  // Finishes the call UNAUTHENTICATED and returns false unless a peer made it.
  bool FromPeer(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor) const;

  const SessionTable* const sessions_;
  const Authenticator* const auth_;
  const std::function<uint32_t()> room_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PEER_SERVICE_H_
