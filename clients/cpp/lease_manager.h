// The leases a pyexec::Client holds on its sessions: one Attach stream per
// leased session, kept open for as long as the client wants the lease.
// Internal to the client library.
//
// While a lease stream is open the server keeps the session; once the last
// one ends (the client ends it, dies or loses its connection) the session
// is unbound after the server's --lease_grace. Streams that end otherwise
// are attached again:
// - UNAVAILABLE (the session moved to another replica, the owner replica
//   cannot be reached, the connection dropped): at once, then with back-off;
// - other transient failures: with back-off (50 ms doubling to 1 s);
// - the `ended` event (the session was unbound, its worker died), NOT_FOUND
//   (the session is gone), and UNIMPLEMENTED, UNAUTHENTICATED,
//   PERMISSION_DENIED, INVALID_ARGUMENT: the lease is over.

#ifndef PYEXEC_CLIENTS_CPP_LEASE_MANAGER_H_
#define PYEXEC_CLIENTS_CPP_LEASE_MANAGER_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/cpp/router.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace internal {

class AttachReactor;

// What a lease looks like from outside, for tests and diagnostics.
struct LeaseInfo {
  bool held = false;     // the current stream said `attached`
  int attaches = 0;      // Attach streams started so far
  int64_t grace_seconds = 0;  // as the server last said
};

// Thread-safe. One thread of its own (started with the first lease) starts,
// cancels and frees the streams, so that no gRPC callback ever waits for it.
class LeaseManager {
 public:
  // REQUIRES: `router` outlives the LeaseManager.
  explicit LeaseManager(Router* router);
  LeaseManager(const LeaseManager&) = delete;
  LeaseManager& operator=(const LeaseManager&) = delete;
  // Ends every lease (cancels its stream) and waits for the streams to end.
  ~LeaseManager();

  // Leases `session` (a second call for a leased session changes nothing)
  // and waits until the server confirms it, until `deadline`. Returns OK
  // once held; the status that ended the lease for good (NOT_FOUND: no such
  // session; UNIMPLEMENTED: a server without leases); or DEADLINE_EXCEEDED,
  // in which case the lease keeps being attempted in the background.
  absl::Status Lease(const std::string& session, absl::Time deadline);

  // Ends the lease on `session`, if any, without waiting.
  void End(const std::string& session);

  // The lease on `session`, or nothing if none is wanted.
  std::optional<LeaseInfo> Info(const std::string& session) const;

 private:
  friend class AttachReactor;

  struct Entry {
    std::string session;
    AttachReactor* stream = nullptr;  // the open stream, if any
    bool held = false;
    bool ended = false;              // the stream said `ended`
    int attaches = 0;
    int failures = 0;                // consecutive, reset when held
    int64_t grace_seconds = 0;
    absl::Time retry_at = absl::InfinitePast();
    absl::Status final;              // set when the lease is over for good
  };

  // From the reactors (gRPC threads): they only record and signal.
  void OnAttached(AttachReactor* stream, int64_t grace_seconds);
  void OnEnded(AttachReactor* stream);
  void OnDone(AttachReactor* stream, const grpc::Status& status);

  void Loop();
  // Streams to start now: entries with no stream whose retry time passed.
  std::vector<std::string> Due(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextRetry() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartThreadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Router* const router_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  // Streams to cancel (their lease was ended), and streams done, to free.
  std::vector<AttachReactor*> to_cancel_ ABSL_GUARDED_BY(mu_);
  std::vector<AttachReactor*> done_ ABSL_GUARDED_BY(mu_);
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace internal
}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_LEASE_MANAGER_H_
