#ifndef PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
#define PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_

// Per-worker private directories (HOME and TMPDIR of a worker), created and
// removed by pyexecd. The worker only ever sees the path.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

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

// Makes a used private directory fit for another worker: empties it (as
// RemoveTree does, keeping `path` itself), sets it back to mode 0700 and
// uid:gid (-1 keeps ours), removes its extended attributes (default ACLs
// included), and renames it to a fresh "<root>/w-<32 random hex digits>",
// whose path it returns.
absl::StatusOr<std::string> RecyclePrivateDir(const std::string& root,
                                              const std::string& path,
                                              int64_t uid, int64_t gid);

// Hands out the workers' private directories under one root and takes them
// back when the workers are gone. With `recycle`, a returned directory is
// recycled (RecyclePrivateDir) and kept for a later worker instead of
// being removed: on a filesystem without a journal, ext4 scans past every
// recently deleted inode to allocate one, and under churn a mkdir cost
// about 0.26 ms of pyexecd's CPU per session. A directory is recycled only
// once no process of its worker's group is left, so that nothing of the
// earlier session can still reach it; pyexecd recycles only when the seccomp
// filter keeps user code's processes inside that group. Thread-safe.
class PrivateDirs {
 public:
  PrivateDirs(std::string root, int64_t uid, int64_t gid, bool recycle,
              size_t max_spare = 32)
      : root_(std::move(root)), uid_(uid), gid_(gid), recycle_(recycle),
        max_spare_(max_spare) {}
  // Removes the spare directories.
  ~PrivateDirs();
  PrivateDirs(const PrivateDirs&) = delete;
  PrivateDirs& operator=(const PrivateDirs&) = delete;

  // A directory for a new worker: a recycled one, else a new one.
  absl::StatusOr<std::string> Take();
  // Takes back the directory of a worker that has exited and been reaped;
  // `pgid` is the process group it led.
  void Return(const std::string& path, pid_t pgid);
  // Removes a directory that must not be handed on (a failed launch).
  void Discard(const std::string& path);

  size_t spare_count() const;

 private:
  const std::string root_;
  const int64_t uid_;
  const int64_t gid_;
  const bool recycle_;
  const size_t max_spare_;
  mutable absl::Mutex mu_;
  std::vector<std::string> spare_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
