#include "clients/cpp/router.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/time/clock.h"

namespace pyexec {
namespace internal {

Router::Router(std::shared_ptr<grpc::Channel> target, RouterOptions options)
    : options_(std::move(options)),
      target_channel_(std::move(target)),
      target_stub_(v1::PyExec::NewStub(target_channel_)) {}

bool Router::Connect(grpc::Channel& channel, absl::Time deadline) {
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    // A refused connection shows up as TRANSIENT_FAILURE at once; only an
    // address that swallows packets makes the wait last until the deadline.
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) return false;
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) return false;
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return true;
}

Route Router::For(absl::string_view session, bool fallback) {
  if (!routing() || session.empty() || fallback) return Route{target_stub_.get(), ""};
  std::string address;
  Owner* owner = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto known = owner_of_.find(session);
    if (known == owner_of_.end()) return Route{target_stub_.get(), ""};
    address = known->second;
    std::unique_ptr<Owner>& slot = owners_[address];
    if (slot == nullptr) {
      slot = std::make_unique<Owner>();
      slot->channel = options_.make_owner_channel(address);
      slot->stub = v1::PyExec::NewStub(slot->channel);
    }
    if (absl::Now() < slot->failed_until) return Route{target_stub_.get(), ""};
    owner = slot.get();  // never erased while the Router lives
  }
  if (owner->channel->GetState(false) == GRPC_CHANNEL_READY ||
      Connect(*owner->channel, absl::Now() + options_.connect_timeout)) {
    return Route{owner->stub.get(), address};
  }
  OwnerFailed(Route{owner->stub.get(), address}, session);
  return Route{target_stub_.get(), ""};
}

void Router::Learned(absl::string_view session, absl::string_view owner) {
  if (!routing() || session.empty() || owner.empty()) return;
  absl::MutexLock lock(&mu_);
  owner_of_[session] = std::string(owner);
}

void Router::OwnerFailed(const Route& route, absl::string_view session) {
  if (route.owner.empty()) return;
  absl::MutexLock lock(&mu_);
  auto it = owners_.find(route.owner);
  if (it != owners_.end()) it->second->failed_until = absl::Now() + options_.failure_hold;
  auto known = owner_of_.find(session);
  if (known != owner_of_.end() && known->second == route.owner) owner_of_.erase(known);
}

void Router::Forget(absl::string_view session) {
  absl::MutexLock lock(&mu_);
  owner_of_.erase(session);
}

std::string Router::OwnerOf(absl::string_view session) const {
  absl::MutexLock lock(&mu_);
  auto it = owner_of_.find(session);
  return it == owner_of_.end() ? "" : it->second;
}

}  // namespace internal
}  // namespace pyexec
