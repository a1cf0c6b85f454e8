#ifndef PYEXEC_SERVER_MIGRATOR_H_
#define PYEXEC_SERVER_MIGRATOR_H_

// Moves a draining replica's sessions to its peers, so that a rolling
// restart, a node drain or a scale-down keeps them. Once the calls in
// flight have finished, each session is frozen (new calls get UNAVAILABLE,
// which clients retry), snapshotted, and restored on the peer with the most
// room, under its old token; the session directory then sends its calls
// there, and so do peers that ask. A session that cannot be carried, or
// that is still busy when the drain time runs out, stays and ends as
// before.

#include <string>

#include "absl/time/time.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/peer_set.h"
#include "server/pyexec_core.h"
#include "server/session_directory.h"
#include "server/session_table.h"

namespace pyexec {

struct MigrationReport {
  int migrated = 0;
  int failed = 0;
  int left_behind = 0;
  uint64_t bytes = 0;
};

class Migrator {
 public:
  // Sessions moved at once.
  static constexpr int kConcurrentMoves = 4;

  // Every pointer must outlive it; `auth` and `metrics` may be null.
  Migrator(PyExecCore* core, SessionTable* sessions, PeerSet* peers,
           SessionDirectory* directory, const Authenticator* auth, Metrics* metrics)
      : core_(core), sessions_(sessions), peers_(peers), directory_(directory), auth_(auth),
        metrics_(metrics) {}

  // Moves every session it can before `deadline`.
  MigrationReport MoveAll(absl::Time deadline);

 private:
  PyExecCore* const core_;
  SessionTable* const sessions_;
  PeerSet* const peers_;
  SessionDirectory* const directory_;
  const Authenticator* const auth_;
  Metrics* const metrics_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_MIGRATOR_H_
