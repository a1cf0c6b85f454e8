#ifndef PYEXEC_SERVER_FORWARDER_H_
#define PYEXEC_SERVER_FORWARDER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server_context.h"
#include "server/metrics.h"
#include "server/peer_set.h"

namespace pyexec {

// Request metadata that marks a call forwarded by a peer. A replica that
// receives it serves the call itself and never forwards again (a session it
// does not hold is NOT_FOUND), so a call crosses at most one extra hop.
inline constexpr char kForwardedHeader[] = "x-pyexec-forwarded";
// Trailing metadata the owner adds to a forwarded call it answered: its
// replica id. Tells the forwarder "the owner answered" apart from "the hop
// failed" when both carry, say, UNAVAILABLE.
inline constexpr char kServedByTrailer[] = "x-pyexec-replica";

// Metadata to send with one forwarded call, given the incoming call.
using ForwardMetadataFn = std::function<std::vector<std::pair<std::string, std::string>>(
    const grpc::CallbackServerContext& context)>;

// The default ForwardMetadataFn: the forwarded marker only. With
// authentication the hook also sends the caller's principal
// (x-pyexec-principal) and the peer's proof; pass that as the Forwarder's
// `metadata`.
std::vector<std::pair<std::string, std::string>> ForwardMetadata(
    const grpc::CallbackServerContext& context);

// The default credentials a replica uses to reach its peers: insecure.
// Peer TLS/mTLS plugs in by passing other credentials to PeerChannel.
std::shared_ptr<grpc::ChannelCredentials> PeerCredentials();

// A long-lived channel to a peer (message size limits, quick reconnects).
// pyexec_server.cc's PeerChannelFactory.
std::shared_ptr<grpc::Channel> PeerChannel(
    const std::string& address, int max_message_bytes,
    std::shared_ptr<grpc::ChannelCredentials> credentials = PeerCredentials());

// True if the call came from a peer's forwarder.
bool IsForwarded(const grpc::CallbackServerContext& context);

// Sends calls on sessions that another replica owns to that replica, and
// returns its answer unchanged: response, status code and message.
//
// Deadlines travel with the call (a call without one gets default_timeout
// here, as it would locally), and a client that cancels, or whose deadline
// passes, cancels the forwarded call, which interrupts the Python code on
// the owner. Nothing blocks: the client side is gRPC's callback API.
//
// Thread-safe. `peers` and `metrics` (may be null) must outlive it.
class Forwarder {
 public:
  // `metadata` makes what each forwarded call carries (the hook for the
  // caller's principal).
  Forwarder(PeerSet* peers, Metrics* metrics, absl::Duration default_timeout,
            ForwardMetadataFn metadata = ForwardMetadata)
      : peers_(peers), metrics_(metrics), default_timeout_(default_timeout),
        metadata_(std::move(metadata)) {}

  // Where a call on `session` runs:
  //   - null: here (a stateless call, a token of ours, a token without a
  //     replica id, or a call a peer already forwarded);
  //   - a peer: forward it there;
  //   - NOT_FOUND: the token names a replica that is not among the
  //     discovered peers (gone, or not one of ours).
  // Marks calls forwarded to us with kServedByTrailer.
  absl::StatusOr<std::shared_ptr<const Peer>> Route(
      grpc::CallbackServerContext* context, absl::string_view session,
      Rpc rpc) const;

  // Starts the call on the peer's stub: `client` is the outgoing context,
  // `done` receives the owner's status.
  using StartCall = std::function<void(const Peer& peer,
                                       grpc::ClientContext* client,
                                       std::function<void(grpc::Status)> done)>;

  // Forwards one unary call to `peer`. `start` must write the owner's answer
  // into the server call's response. `received` is when the call arrived
  // (for the latency metric).
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    std::shared_ptr<const Peer> peer, Rpc rpc,
                                    absl::Time received, StartCall start) const;

 private:
  PeerSet* const peers_;
  Metrics* const metrics_;
  const absl::Duration default_timeout_;
  const ForwardMetadataFn metadata_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_FORWARDER_H_
