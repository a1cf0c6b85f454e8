#include "server/session_directory.h"

#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/peer.grpc.pb.h"
#include "server/forwarder.h"

namespace pyexec {

void SessionDirectory::Remember(const std::string& token, Entry entry) {
  if (entries_.size() >= kMaxEntries) {
    // Forget what has expired; if that frees nothing, forget everything
    // learned (moves of our own are kept: only we know them).
    const absl::Time now = absl::Now();
    absl::erase_if(entries_, [now](const auto& e) {
      return !e.second.moved_by_us && e.second.until < now;
    });
    if (entries_.size() >= kMaxEntries) {
      absl::erase_if(entries_, [](const auto& e) { return !e.second.moved_by_us; });
    }
  }
  entries_[token] = std::move(entry);
}

void SessionDirectory::Moved(const std::string& token, const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  Remember(token, Entry{peer_id, absl::InfiniteFuture(), true});
  ++moved_;
}

void SessionDirectory::Ended(const std::string& token) {
  absl::MutexLock lock(&mu_);
  Remember(token, Entry{"", absl::Now() + kRemember, false, true});
}

size_t SessionDirectory::moved_count() const {
  absl::MutexLock lock(&mu_);
  return moved_;
}

SessionDirectory::Whereabouts SessionDirectory::Lookup(absl::string_view token) {
  Whereabouts known;
  std::string peer_id;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(token);
    if (it == entries_.end() || it->second.until < absl::Now()) return known;
    known.ended_here = it->second.ended_here;
    peer_id = it->second.peer_id;
  }
  if (!peer_id.empty()) known.holder = peers_->Find(peer_id);
  return known;
}

std::shared_ptr<const Peer> SessionDirectory::Locate(absl::string_view token,
                                                     absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(token);
    if (it != entries_.end() && it->second.until >= absl::Now()) {
      return it->second.peer_id.empty() ? nullptr : peers_->Find(it->second.peer_id);
    }
  }
  std::vector<std::shared_ptr<const Peer>> others = peers_->Others();
  struct Ask {
    std::shared_ptr<const Peer> peer;
    grpc::ClientContext context;
    internal::LocateRequest request;
    internal::LocateResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Ask>> asks;
  auto done = std::make_shared<absl::BlockingCounter>(static_cast<int>(others.size()));
  const auto deadline = std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
  std::vector<std::unique_ptr<internal::Peer::Stub>> stubs;
  for (const auto& peer : others) {
    auto ask = std::make_unique<Ask>();
    ask->peer = peer;
    ask->context.set_deadline(deadline);
    for (const auto& [key, value] : ForwardMetadata(auth_, "")) {
      ask->context.AddMetadata(key, value);
    }
    ask->request.set_session(std::string(token));
    stubs.push_back(internal::Peer::NewStub(peer->channel));
    Ask* raw = ask.get();
    stubs.back()->async()->Locate(&raw->context, &raw->request, &raw->response,
                                  [raw, done](grpc::Status status) {
                                    raw->status = std::move(status);
                                    done->DecrementCount();
                                  });
    asks.push_back(std::move(ask));
  }
  done->Wait();  // every call ends by its deadline
  std::shared_ptr<const Peer> holder;
  for (const auto& ask : asks) {
    if (ask->status.ok() && ask->response.held()) holder = ask->peer;
  }
  absl::MutexLock lock(&mu_);
  Remember(std::string(token),
           Entry{holder != nullptr ? holder->id : std::string(),
                 absl::Now() + (holder != nullptr ? kRemember : kRememberMiss), false});
  return holder;
}

}  // namespace pyexec
