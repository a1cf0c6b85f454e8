#include "server/forwarder.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "server/call_metadata.h"
#include "server/status_util.h"

namespace pyexec {
namespace {

// One forwarded call: the server side's reactor owns the client context, so
// the client call lives exactly as long as the server call. A client that
// goes away (or whose deadline passes) reaches OnCancel, which cancels the
// forwarded call; the owner then interrupts the Python code.
class ForwardReactor final : public grpc::ServerUnaryReactor {
 public:
  ForwardReactor(std::shared_ptr<const Peer> peer, Metrics* metrics, Rpc rpc,
                 absl::Time received)
      : peer_(std::move(peer)), metrics_(metrics), rpc_(rpc),
        received_(received) {}

  grpc::ClientContext* client() { return &client_; }
  const Peer& peer() const { return *peer_; }

  // The owner's answer, or the hop's failure. Runs on a gRPC thread; the
  // last thing it does is Finish, after which `this` may be gone.
  void Done(grpc::Status status) {
    Finish(ForwardedStatus(client_, std::move(status), *peer_, metrics_, rpc_,
                           received_));
  }

  void OnCancel() override { client_.TryCancel(); }
  void OnDone() override { delete this; }
  // Neither reaction blocks or takes a lock held around Finish: gRPC may run
  // them inline (see PoolCallReactor).
  bool InternalInlineable() override { return true; }

 private:
  const std::shared_ptr<const Peer> peer_;  // keeps the channel alive
  Metrics* const metrics_;
  const Rpc rpc_;
  const absl::Time received_;
  grpc::ClientContext client_;
};

}  // namespace

grpc::Status ForwardedStatus(const grpc::ClientContext& client,
                             grpc::Status status, const Peer& peer,
                             Metrics* metrics, Rpc rpc, absl::Time received) {
  ForwardOutcome outcome = ForwardOutcome::kAnswered;
  const auto& trailers = client.GetServerTrailingMetadata();
  if (trailers.find(kServedByTrailer) == trailers.end()) {
    // The owner never answered: the hop itself ended the call.
    switch (status.error_code()) {
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        outcome = ForwardOutcome::kDeadlineExceeded;
        break;
      case grpc::StatusCode::CANCELLED:
        outcome = ForwardOutcome::kCancelled;
        break;
      case grpc::StatusCode::UNAVAILABLE:
        outcome = ForwardOutcome::kUnreachable;
        status = ToGrpcStatus(absl::UnavailableError(absl::StrCat(
            "the session's replica ", peer.address, " cannot be reached (",
            status.error_message(), "); if it is gone, so is the session")));
        break;
      default:
        break;
    }
  }
  if (metrics != nullptr) {
    metrics->RecordForward(rpc, outcome);
    metrics->RecordCall(rpc, status.error_code(), absl::Now() - received);
  }
  return status;
}

void PrepareForwardContext(const grpc::CallbackServerContext& context,
                           absl::Duration default_timeout,
                           const Authenticator* auth,
                           absl::string_view principal,
                           grpc::ClientContext* client) {
  std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    deadline = absl::ToChronoTime(absl::Now() + default_timeout);
  }
  client->set_deadline(deadline);
  for (auto& [key, value] : ForwardMetadata(auth, principal)) {
    client->AddMetadata(key, value);
  }
  const auto& metadata = context.client_metadata();
  for (const char* key : {kCallIdHeader, kCallbackHeader}) {
    auto it = metadata.find(key);
    if (it != metadata.end()) {
      client->AddMetadata(key, std::string(it->second.data(), it->second.size()));
    }
  }
}

std::vector<std::pair<std::string, std::string>> ForwardMetadata(
    const Authenticator* auth, absl::string_view principal) {
  if (auth == nullptr) return {{kForwardedHeader, "1"}};
  return auth->PeerMetadata(principal);
}

std::shared_ptr<grpc::Channel> PeerChannel(
    const std::string& address, int max_message_bytes,
    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  // A restarted peer should be reachable again within a second or two.
  // (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it is also the connect timeout,
  // and a busy peer may take longer than a short one to accept.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // Each peer gets a channel (and connection) of its own, even when two
  // PeerSets in one process name the same address (tests).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  return grpc::CreateCustomChannel(address, credentials, args);
}

bool IsForwarded(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  return metadata.find(kForwardedHeader) != metadata.end();
}

absl::StatusOr<std::shared_ptr<const Peer>> Forwarder::Route(
    grpc::CallbackServerContext* context, absl::string_view session,
    Rpc rpc) const {
  absl::StatusOr<std::shared_ptr<const Peer>> owner = Owner(context, session, rpc);
  if (owner.ok() && *owner != nullptr) {
    // Tells a client that can reach the owner where to send the session's
    // next calls.
    context->AddInitialMetadata(kOwnerHeader, (*owner)->address);
  }
  return owner;
}

absl::StatusOr<std::shared_ptr<const Peer>> Forwarder::Owner(
    grpc::CallbackServerContext* context, absl::string_view session, Rpc rpc) const {
  if (session.empty()) return nullptr;
  // Held here, or ended here (NOT_FOUND from this replica's own table).
  const bool held = holds_ != nullptr && holds_(session);
  SessionDirectory::Whereabouts known;
  if (!held && directory_ != nullptr) known = directory_->Lookup(session);
  if (held || known.ended_here) {
    if (IsForwarded(*context)) context->AddTrailingMetadata(kServedByTrailer, peers_->self_id());
    return nullptr;
  }
  // A session this replica moved away (or learned the place of) goes there,
  // even when a peer forwarded the call here: its holder serves it itself,
  // so a call crosses at most two hops, and that only while the replica
  // that moved it is still up.
  if (known.holder != nullptr) return known.holder;
  if (IsForwarded(*context)) {
    // Forward at most once otherwise: whatever our table says is the answer.
    context->AddTrailingMetadata(kServedByTrailer, peers_->self_id());
    return nullptr;
  }
  absl::string_view owner = ReplicaIdOfToken(session);
  if (owner.empty()) return nullptr;
  if (owner == peers_->self_id()) {
    // Ours by its name but not held: an earlier process at this address
    // may have moved it away when it drained.
    if (directory_ != nullptr) {
      if (std::shared_ptr<const Peer> holder = directory_->Locate(session, kLocateTimeout)) {
        return holder;
      }
    }
    return nullptr;
  }
  if (std::shared_ptr<const Peer> peer = peers_->Find(owner)) {
    // Its replica is listed but was unreachable last time (it drained and
    // stopped, and is not yet out of the peer list): the session may have
    // moved. Ask; if nobody has it, try the replica anyway.
    if (directory_ != nullptr &&
        peer->channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
      if (std::shared_ptr<const Peer> holder = directory_->Locate(session, kLocateTimeout)) {
        return holder;
      }
    }
    return peer;
  }
  // Its replica is gone: the session may have moved when it drained.
  if (directory_ != nullptr) {
    if (std::shared_ptr<const Peer> holder = directory_->Locate(session, kLocateTimeout)) {
      return holder;
    }
  }
  if (metrics_ != nullptr) {
    metrics_->RecordForward(rpc, ForwardOutcome::kUnknownReplica);
  }
  return absl::NotFoundError(absl::StrCat(
      "session not found: its replica ", owner,
      " is not among the current peers and no peer holds it (the replica is gone, and its "
      "sessions with it, or the token is not one of ours)"));
}

grpc::ServerUnaryReactor* Forwarder::Forward(
    grpc::CallbackServerContext* context, std::shared_ptr<const Peer> peer,
    Rpc rpc, absl::Time received, StartCall start,
    absl::string_view principal) const {
  auto* reactor = new ForwardReactor(std::move(peer), metrics_, rpc, received);
  grpc::ClientContext* client = reactor->client();
  PrepareForwardContext(*context, default_timeout_, auth_, principal, client);
  start(reactor->peer(), client,
        [reactor](grpc::Status status) { reactor->Done(std::move(status)); });
  return reactor;
}

}  // namespace pyexec
