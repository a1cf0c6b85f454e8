#ifndef PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
#define PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_

// Per-worker private directories (HOME and TMPDIR of a worker), created and
// removed by pyexecd. The worker only ever sees the path.

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pyexec {

// Creates the directory that holds every worker's private directory:
// `path` if given (it must exist; it is left in place), else a fresh
// "$TMPDIR/pyexecd-XXXXXX" (or under /tmp). Mode 0711: workers may enter
// their own subdirectory but not list the others' unguessable names.
absl::StatusOr<std::string> CreatePrivateDirRoot(const std::string& path);

// Creates "<root>/w-<32 random hex digits>", mode 0700, owned by uid:gid
// (-1 keeps ours), and returns its path.
absl::StatusOr<std::string> CreatePrivateDir(const std::string& root,
                                             int64_t uid, int64_t gid);

// Deletes `path` and everything below it without following symlinks, even
// when the tree's owner races to plant some (every step is relative to an
// already opened directory and refuses to open a symlink).
absl::Status RemoveTree(const std::string& path);

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
