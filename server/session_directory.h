#ifndef PYEXEC_SERVER_SESSION_DIRECTORY_H_
#define PYEXEC_SERVER_SESSION_DIRECTORY_H_

// Where sessions that left their replica are now. A draining replica moves
// its sessions to its peers (server/migrator.h), and a moved session keeps
// its token, whose replica id then names a replica that is gone or going.
// This replica remembers the sessions it moved away, and finds the others
// by asking its peers (Peer.Locate, all at once, within a short deadline),
// caching what it learns. An address is never taken from a token.
//
// Thread-safe.

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/peer_set.h"

namespace pyexec {

class SessionDirectory {
 public:
  // How long a learned location is kept, and a miss.
  static constexpr absl::Duration kRemember = absl::Hours(2);
  static constexpr absl::Duration kRememberMiss = absl::Seconds(2);
  static constexpr size_t kMaxEntries = 200000;

  // `peers` and `auth` (may be null) must outlive it.
  SessionDirectory(PeerSet* peers, const Authenticator* auth) : peers_(peers), auth_(auth) {}

  // This replica moved `token` to the peer `peer_id`.
  void Moved(const std::string& token, const std::string& peer_id);
  // What this replica knows of `token`, read under one lock: that it ended
  // here (within kRemember; its calls then get NOT_FOUND here, instead of a
  // trip to the replica its token names, which may be gone: the session
  // moved here when that one drained), or the peer holding it if this
  // replica moved it there or learned it (null while that peer is not among
  // the current peers), or neither.
  struct Whereabouts {
    bool ended_here = false;
    std::shared_ptr<const Peer> holder;
  };
  Whereabouts Lookup(absl::string_view token);
  // Asks the other peers whether they hold `token` (within `timeout`), and
  // remembers the answer. Null if none does.
  std::shared_ptr<const Peer> Locate(absl::string_view token, absl::Duration timeout);

  // `token` ended on this replica (unbound, expired, its worker died).
  void Ended(const std::string& token);

  // Sessions this replica moved away (for metrics and tests).
  size_t moved_count() const;

 private:
  struct Entry {
    std::string peer_id;  // "" for a recent miss
    absl::Time until;
    bool moved_by_us = false;
    bool ended_here = false;
  };
  void Remember(const std::string& token, Entry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  PeerSet* const peers_;
  const Authenticator* const auth_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  size_t moved_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_SESSION_DIRECTORY_H_
