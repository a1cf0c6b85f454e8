#ifndef PYEXEC_SERVER_SNAPSHOT_SEAL_H_
#define PYEXEC_SERVER_SNAPSHOT_SEAL_H_

// A session snapshot leaves the server as a blob its client holds, and comes
// back in Bind{restore}: data from a user, which must carry that user's
// privileges only. The blob is sealed with HMAC-SHA256 under the
// deployment's key (derived from the peer secret, which every replica has;
// without one, a random key of this replica's own, so its blobs restore
// here only). Open checks the MAC, in constant time, before it parses
// anything, then the principal: a forged, altered or another principal's
// blob never reaches the unpickler.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pyexec/v1/peer.pb.h"

namespace pyexec {

class SnapshotSeal {
 public:
  // `secret`: the peer secret; empty: a random key for this process.
  explicit SnapshotSeal(absl::string_view secret);

  // The blob for `envelope`.
  std::string Seal(const internal::SnapshotEnvelope& envelope) const;

  // The envelope of `blob`, if its MAC holds and it belongs to `principal`;
  // INVALID_ARGUMENT otherwise (the message says which, and nothing more).
  absl::StatusOr<internal::SnapshotEnvelope> Open(absl::string_view blob,
                                                  absl::string_view principal) const;

 private:
  std::string Mac(absl::string_view data) const;

  std::string key_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_SNAPSHOT_SEAL_H_
