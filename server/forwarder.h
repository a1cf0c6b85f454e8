#ifndef PYEXEC_SERVER_FORWARDER_H_
#define PYEXEC_SERVER_FORWARDER_H_

#include <atomic>
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
#include "grpcpp/support/client_callback.h"
#include "grpcpp/support/server_callback.h"
#include "pyexec/v1/pyexec.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/peer_set.h"
#include "server/session_directory.h"

namespace pyexec {

// kForwardedHeader (server/auth.h) marks a call forwarded by a peer. A
// replica that receives it serves the call itself and never forwards again
// (a session it does not hold is NOT_FOUND), so a call crosses at most one
// extra hop. kPrincipalHeader carries the caller's principal; the owner
// accepts it only from an authenticated peer (Authenticator).
// Trailing metadata the owner adds to a forwarded call it answered: its
// replica id. Tells the forwarder "the owner answered" apart from "the hop
// failed" when both carry, say, UNAVAILABLE.
inline constexpr char kServedByTrailer[] = "x-pyexec-replica";

// The metadata a forwarded call carries to the owner on behalf of
// `principal`: the forwarded marker, the principal and, with a peer secret,
// the secret (Authenticator::PeerMetadata). Without an authenticator (tests,
// a replica run alone) only the forwarded marker.
std::vector<std::pair<std::string, std::string>> ForwardMetadata(
    const Authenticator* auth, absl::string_view principal);

// A long-lived channel to a peer (message size limits, quick reconnects).
// `credentials` come from MakePeerChannelCredentials (server/tls.h): TLS with
// this replica's certificate when TLS is on; null means plaintext. The
// default PeerChannelFactory.
std::shared_ptr<grpc::Channel> PeerChannel(
    const std::string& address, int max_message_bytes,
    std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// True if the call came from a peer's forwarder.
bool IsForwarded(const grpc::CallbackServerContext& context);

// Starts a server-streaming call on a peer's stub with `reactor` reading it.
template <typename Request, typename Event>
using StreamStarter = std::function<void(
    v1::PyExec::Stub* stub, grpc::ClientContext* client, const Request* request,
    grpc::ClientReadReactor<Event>* reactor)>;

// The status a forwarded call ends with, from the owner's `status` on
// `client`: the owner's answer unchanged, or the hop's failure made clear
// (UNAVAILABLE names the unreachable replica). Records the forward and call
// metrics when `metrics` is not null.
grpc::Status ForwardedStatus(const grpc::ClientContext& client,
                             grpc::Status status, const Peer& peer,
                             Metrics* metrics, Rpc rpc, absl::Time received);

// Prepares the outgoing context of a forwarded call: the deadline (or
// default_timeout), ForwardMetadata(auth, principal), and the metadata the
// client put on the call for the owner (server/call_metadata.h).
void PrepareForwardContext(const grpc::CallbackServerContext& context,
                           absl::Duration default_timeout,
                           const Authenticator* auth,
                           absl::string_view principal,
                           grpc::ClientContext* client);

// One forwarded server stream. It reads one event from the owner, writes it
// to the client, and only then reads the next, so a slow client slows the
// owner's worker down through the hop too (the backpressure of a local
// stream). A client that cancels cancels the forwarded stream. Deleted once
// both the server side and the client side are done.
template <typename Request, typename Event>
class ForwardStreamReactor final : public grpc::ServerWriteReactor<Event>,
                                   public grpc::ClientReadReactor<Event> {
 public:
  ForwardStreamReactor(std::shared_ptr<const Peer> peer, Metrics* metrics,
                       Rpc rpc, absl::Time received)
      : peer_(std::move(peer)), metrics_(metrics), rpc_(rpc),
        received_(received) {}

  void Start(const grpc::CallbackServerContext& context,
             absl::Duration default_timeout, const Authenticator* auth,
             absl::string_view principal, const Request* request,
             const StreamStarter<Request, Event>& start) {
    PrepareForwardContext(context, default_timeout, auth, principal, &client_);
    start(peer_->stub.get(), &client_, request, this);
    grpc::ClientReadReactor<Event>::StartRead(&event_);
    grpc::ClientReadReactor<Event>::StartCall();
  }

  // Client side: an event from the owner, or the end of its stream.
  void OnReadDone(bool ok) override {
    if (ok) grpc::ServerWriteReactor<Event>::StartWrite(&event_);
    // else: the owner's status follows in OnDone(status).
  }
  void OnDone(const grpc::Status& status) override {
    grpc::ServerWriteReactor<Event>::Finish(ForwardedStatus(
        client_, status, *peer_, metrics_, rpc_, received_));
    Unref();
  }

  // Server side.
  void OnWriteDone(bool ok) override {
    if (ok) {
      grpc::ClientReadReactor<Event>::StartRead(&event_);
    } else {
      client_.TryCancel();  // our client is gone
    }
  }
  void OnCancel() override { client_.TryCancel(); }
  void OnDone() override { Unref(); }

 private:
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  const std::shared_ptr<const Peer> peer_;  // keeps the channel alive
  Metrics* const metrics_;
  const Rpc rpc_;
  const absl::Time received_;
  grpc::ClientContext client_;
  Event event_;  // one event in flight: read into, then written from
  std::atomic<int> refs_{2};
};

// Sends calls on sessions that another replica owns to that replica, and
// returns its answer unchanged: response, status code and message.
//
// Deadlines travel with the call (a call without one gets default_timeout
// here, as it would locally), and a client that cancels, or whose deadline
// passes, cancels the forwarded call, which interrupts the Python code on
// the owner. Nothing blocks: the client side is gRPC's callback API.
//
// Thread-safe. `peers`, `metrics` and `auth` (both may be null) must outlive
// it.
class Forwarder {
 public:
  // How long a replica asks its peers where a moved session went.
  static constexpr absl::Duration kLocateTimeout = absl::Milliseconds(500);

  Forwarder(PeerSet* peers, Metrics* metrics, absl::Duration default_timeout,
            const Authenticator* auth = nullptr)
      : peers_(peers),
        metrics_(metrics),
        default_timeout_(default_timeout),
        auth_(auth) {}

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

  // Forwards one unary call to `peer` on behalf of `principal` (the
  // authenticated caller). `start` must write the owner's answer into the
  // server call's response. `received` is when the call arrived (for the
  // latency metric).
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context,
                                    std::shared_ptr<const Peer> peer, Rpc rpc,
                                    absl::Time received, StartCall start,
                                    absl::string_view principal = "") const;

  // Prepares `client` for a call forwarded on behalf of `principal` (see
  // PrepareForwardContext), for reactors that forward a call themselves
  // (Run).
  void PrepareContext(const grpc::CallbackServerContext& context, absl::string_view principal,
                      grpc::ClientContext* client) const {
    PrepareForwardContext(context, default_timeout_, auth_, principal, client);
  }
  Metrics* metrics() const { return metrics_; }

  // Forwards one server stream (ExecStream, CallStream, Attach) to `peer`
  // on behalf of `principal`.
  template <typename Request, typename Event>
  grpc::ServerWriteReactor<Event>* ForwardStream(
      grpc::CallbackServerContext* context, std::shared_ptr<const Peer> peer,
      Rpc rpc, absl::Time received, const Request* request,
      StreamStarter<Request, Event> start,
      absl::string_view principal = "") const {
    auto* reactor = new ForwardStreamReactor<Request, Event>(
        std::move(peer), metrics_, rpc, received);
    reactor->Start(*context, default_timeout_, auth_, principal, request, start);
    return reactor;
  }

  // Sessions held here are served here whatever replica their token names
  // (moved here from a draining peer); `holds` says which. Sessions that
  // left their replica are found through `directory`. Both before serving.
  void SetSessionLocator(std::function<bool(absl::string_view token)> holds,
                         SessionDirectory* directory) {
    holds_ = std::move(holds);
    directory_ = directory;
  }

 private:
  // The peer to send a call on `session` to, or null to serve it here.
  absl::StatusOr<std::shared_ptr<const Peer>> Owner(grpc::CallbackServerContext* context,
                                                    absl::string_view session, Rpc rpc) const;

  PeerSet* const peers_;
  Metrics* const metrics_;
  const absl::Duration default_timeout_;
  const Authenticator* const auth_;
  std::function<bool(absl::string_view)> holds_;
  SessionDirectory* directory_ = nullptr;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_FORWARDER_H_
