#ifndef PYEXEC_SERVER_SESSION_TABLE_H_
#define PYEXEC_SERVER_SESSION_TABLE_H_

#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "context_pool/pool_ids.h"

namespace pyexec {

// Maps session tokens to the workers checked out for them and to the
// principals that own them, and tracks idle deadlines.
//
// Ownership: a token used by any principal other than its owner behaves
// exactly like an unknown token (NOT_FOUND, Remove does nothing), so a
// foreign token reveals nothing. Without authentication every caller is the
// principal "" and owns every session.
//
// Tokens carry 128 bits from the OS CSPRNG (getrandom), hex-encoded, after
// an optional fixed prefix that names the owning replica. A
// session whose calls are in flight never expires; its idle clock restarts
// when its last call ends. Thread-safe.
class SessionTable {
 public:
  // `now` is injected so that tests control time; idle expiry runs on the
  // monotonic clock, so that setting the wall clock expires nothing. Tokens
  // start with `token_prefix` (with --peers: "<replica id>.", see
  // peer_set.h).
  explicit SessionTable(std::function<absl::Time()> now = MonotonicNow,
                        std::string token_prefix = "",
                        absl::Duration lease_grace = absl::Seconds(5))
      : now_(std::move(now)),
        token_prefix_(std::move(token_prefix)),
        lease_grace_(lease_grace) {}

  // Registers a session for `worker` owned by `owner` and returns its new
  // token.
  std::string Add(WorkerId worker, absl::Duration idle_timeout,
                  absl::string_view owner = "");
  // Registers a session under a token it already has (moved here from a
  // draining replica). Returns the token, or "" if it is taken.
  std::string AddWithToken(const std::string& token, WorkerId worker,
                           absl::Duration idle_timeout, absl::string_view owner);
  // Whether `token` is a session held here.
  bool Holds(absl::string_view token) const;

  // A session as the migrator sees it.
  struct Listed {
    std::string token;
    std::string owner;
    absl::Duration idle_timeout;
    int calls_in_flight = 0;
  };
  // Every session, in no particular order.
  std::vector<Listed> List() const;
  // Marks a session as leaving (or, on a failed move, staying after all).
  void SetMoving(absl::string_view token, bool moving);

  // Reserves room for one more session of `owner` before a Bind waits for a
  // worker: RESOURCE_EXHAUSTED when the owner already has `limit` sessions
  // (live or reserved); `limit` 0 means no limit. Every successful
  // ReserveSlot must be paired with ReleaseSlot, after Add or on failure.
  absl::Status ReserveSlot(absl::string_view owner, int limit);
  void ReleaseSlot(absl::string_view owner);
  // Live sessions of `owner`.
  int CountOwnedBy(absl::string_view owner) const;

  // Marks a call on the session as started and returns its worker, or
  // NOT_FOUND for an unknown, expired or unbound token, or one owned by
  // another principal. Every successful BeginCall must be paired with
  // EndCall.
  // A session being moved to another replica (SetMoving) refuses new calls
  // with UNAVAILABLE (the client retries and finds it moved), except the
  // move's own (`moving_call`).
  absl::StatusOr<WorkerId> BeginCall(absl::string_view token,
                                     absl::string_view principal = "",
                                     bool moving_call = false);
  // Marks a call as ended; the idle clock restarts. Unknown tokens are
  // ignored (the session may have been unbound meanwhile).
  void EndCall(absl::string_view token);

  // Removes a session owned by `principal`, returning its worker if it
  // existed. Another principal's token is left alone.
  std::optional<WorkerId> Remove(absl::string_view token,
                                 absl::string_view principal = "");
  // Removes the session bound to `worker` (its worker died). Returns the
  // token if there was one.
  std::optional<std::string> RemoveByWorker(WorkerId worker);
  // Why TakeExpired let a session go.
  enum class Expiry { kIdle, kLeaseEnded };
  struct Expired {
    std::string token;
    WorkerId worker;
    Expiry why;
  };
  // Removes and returns the sessions idle past their timeout, or past the
  // grace after their last lease ended, with no call in flight.
  std::vector<Expired> TakeExpired();
  // How long until TakeExpired may have something to take, by the table's
  // own clock (InfiniteDuration if nothing is due, zero if something is due
  // now): the expiry job sleeps that long.
  absl::Duration TimeToNextExpiry() const;
  // Called (under the table's lock, so it must not call back into the table)
  // whenever a session may now expire sooner than anything due before, for
  // example when its last lease ends: the expiry job wakes up for it instead
  // of finding it on its next regular tick.
  void SetExpiryWake(std::function<void()> wake);

  // Takes a lease on a session owned by `principal`: NOT_FOUND as BeginCall.
  absl::Status AddLease(absl::string_view token, absl::string_view principal);
  // Ends one lease; the last one starts the grace. Unknown tokens are
  // ignored.
  void DropLease(absl::string_view token);
  absl::Duration lease_grace() const { return lease_grace_; }

  size_t size() const;

 private:
  struct Session {
    WorkerId worker;
    absl::Duration idle_timeout;
    absl::Time last_used;
    int calls_in_flight = 0;
    std::string owner;
    int leases = 0;
    // When the last lease's grace ends; InfiniteFuture while leased or if
    // never leased.
    absl::Time lease_deadline = absl::InfiniteFuture();
    // The generation of the session's live entry in the expiry queue.
    uint64_t generation = 0;
    bool moving = false;
  };
  // An entry of the expiry queue: the session may expire at `when`, no
  // sooner; stale entries (an older generation) are skipped.
  struct Due {
    absl::Time when;
    std::string token;
    uint64_t generation;
    bool operator>(const Due& other) const { return when > other.when; }
  };

  // Forgets a session (its maps and its owner's count).
  void EraseLocked(absl::flat_hash_map<std::string, Session>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The earliest time `session` could expire.
  static absl::Time ExpiresAt(const Session& session);
  // Replaces the session's expiry entry with one at `when`.
  void ScheduleLocked(const std::string& token, Session& session, absl::Time when)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::function<absl::Time()> now_;
  const std::string token_prefix_;
  const absl::Duration lease_grace_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WorkerId, std::string> by_worker_ ABSL_GUARDED_BY(mu_);
  // Live plus reserved sessions per owner.
  absl::flat_hash_map<std::string, int> owned_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::function<void()> wake_ ABSL_GUARDED_BY(mu_);
};

// 128 random bits from getrandom(2), as 32 lowercase hex digits.
std::string NewSessionToken();

}  // namespace pyexec

#endif  // PYEXEC_SERVER_SESSION_TABLE_H_
