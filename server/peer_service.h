#ifndef PYEXEC_SERVER_PEER_SERVICE_H_
#define PYEXEC_SERVER_PEER_SERVICE_H_

// The Peer service (proto/pyexec/v1/peer.proto): what replicas ask each
// other. Only a peer may call it: a call must be marked forwarded and carry
// the peer proof the Authenticator checks (the peer secret or an mTLS peer
// certificate); anything else is UNAUTHENTICATED.

#include "pyexec/v1/peer.grpc.pb.h"
#include "server/auth.h"
#include "server/session_table.h"

namespace pyexec {

class PeerService final : public internal::Peer::CallbackService {
 public:
  // Both must outlive it; `auth` may be null (authentication off).
  PeerService(const SessionTable* sessions, const Authenticator* auth)
      : sessions_(sessions), auth_(auth) {}

  grpc::ServerUnaryReactor* Locate(grpc::CallbackServerContext* context,
                                   const internal::LocateRequest* request,
                                   internal::LocateResponse* response) override;

 private:
  const SessionTable* const sessions_;
  const Authenticator* const auth_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PEER_SERVICE_H_
