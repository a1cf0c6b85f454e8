// Where a pyexec::Client sends a session's calls: to the replica that owns
// the session (BindResponse.owner, or the x-pyexec-owner metadata of a
// forwarded answer), on a channel of its own, or to the client's target (a
// balancer, or the one server). Internal to the client library.

#ifndef PYEXEC_CLIENTS_CPP_ROUTER_H_
#define PYEXEC_CLIENTS_CPP_ROUTER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace internal {

// Makes the channel to an owner's address, with the client's own
// credentials and metadata (an owner is never trusted for anything else).
using OwnerChannelFactory =
    std::function<std::shared_ptr<grpc::Channel>(const std::string& address)>;

// The stub a call goes through, and the owner address it reaches ("" for
// the client's target).
struct Route {
  v1::PyExec::StubInterface* stub = nullptr;
  std::string owner;
};

struct RouterOptions {
  // Null: every call goes to the target (routing off).
  OwnerChannelFactory make_owner_channel;
  // How long a call waits for a new (or idle) owner channel to connect
  // before it goes to the target instead.
  absl::Duration connect_timeout = absl::Seconds(1);
  // How long an owner that failed (could not connect, or answered
  // UNAVAILABLE) is skipped before it is tried again.
  absl::Duration failure_hold = absl::Seconds(10);
};

// Thread-safe. Owner channels are cached by address and closed with the
// Router. Stubs it returns stay valid for the Router's lifetime.
class Router {
 public:
  Router(std::shared_ptr<grpc::Channel> target, RouterOptions options);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // True when owner routing is on.
  bool routing() const { return static_cast<bool>(options_.make_owner_channel); }

  // The route of a call on `session` ("" for stateless calls): the owner
  // when routing is on, the owner is known and has not failed lately, and
  // its channel is (or becomes, within connect_timeout) ready; else the
  // target. `fallback` forces the target.
  Route For(absl::string_view session, bool fallback = false);

  // The stub of the target.
  v1::PyExec::StubInterface& target() const { return *target_stub_; }

  // The owner of `session` is `owner` (ignored when empty or routing is
  // off).
  void Learned(absl::string_view session, absl::string_view owner);

  // A call routed to `route.owner` failed UNAVAILABLE: skip that owner for
  // a while, and forget it as `session`'s owner.
  void OwnerFailed(const Route& route, absl::string_view session);

  // The session is gone: forget its owner.
  void Forget(absl::string_view session);

  // The owner address known for `session`, or "".
  std::string OwnerOf(absl::string_view session) const;

 private:
  struct Owner {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::PyExec::StubInterface> stub;
    absl::Time failed_until = absl::InfinitePast();
  };

  // Waits for `channel` to become READY, until `deadline`; false if it
  // fails to connect first.
  static bool Connect(grpc::Channel& channel, absl::Time deadline);

  const RouterOptions options_;
  const std::shared_ptr<grpc::Channel> target_channel_;
  const std::unique_ptr<v1::PyExec::StubInterface> target_stub_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> owner_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Owner>> owners_ ABSL_GUARDED_BY(mu_);
};

}  // namespace internal
}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_ROUTER_H_
