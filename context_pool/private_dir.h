#ifndef PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
#define PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_

// Per-worker private directories (HOME and TMPDIR of a worker), created and
// removed by pyexecd. The worker only ever sees the path.

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

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
// already opened directory and refuses to open a symlink). At most a few
// dozen descriptors are open at once however deep the tree: deeper
// subtrees are moved up under `path` and removed from there.
absl::Status RemoveTree(const std::string& path);

// Makes a used private directory fit for another worker: empties it (as
// RemoveTree does, keeping `path` itself), sets it back to mode 0700 and
// uid:gid (-1 keeps ours), removes its extended attributes (default ACLs
// included), and renames it to a fresh "<root>/w-<32 random hex digits>",
// whose path it returns.
absl::StatusOr<std::string> RecyclePrivateDir(const std::string& root,
                                              const std::string& path,
                                              int64_t uid, int64_t gid);

// How many bytes of disk the tree under `path` takes (st_blocks of every
// file and directory, no symlink followed), stopping early once past
// `limit`. FAILED_PRECONDITION when it nests deeper than kMaxMeasuredDepth:
// such a tree could hide what it holds from a walk with bounded descriptors.
inline constexpr int kMaxMeasuredDepth = 128;
absl::StatusOr<uint64_t> DiskUsage(const std::string& path, uint64_t limit);

// Hands out the workers' private directories under one root and takes them
// back when the workers are gone. With `recycle`, a returned directory is
// recycled (RecyclePrivateDir) and kept for a later worker instead of
// being removed: on a filesystem without a journal, ext4 scans past every
// recently deleted inode to allocate one, so a mkdir per session is costly
// under churn. A directory is recycled only once no process of its worker's
// group is left, so that nothing of the earlier session can still reach it;
// pyexecd recycles only when the seccomp filter keeps user code's processes
// inside that group.
//
// Returned directories are emptied on a thread of its own, never on the
// caller's: a session may leave a million files behind, and the caller (the
// pool) must not wait for them. The same thread enforces the disk cap: it
// measures the directories of running workers (Attach) and kills a worker's
// process group once its directory takes more than `max_disk_bytes`.
//
// Thread-safe.
class PrivateDirs {
 public:
  struct Options {
    std::string root;
    // Owner of new directories; -1 keeps ours.
    int64_t uid = -1;
    int64_t gid = -1;
    bool recycle = false;
    size_t max_spare = 32;
    // Disk a worker's directory may take; 0 = no cap.
    uint64_t max_disk_bytes = 0;
    // Least time between two measurements of one directory. A directory
    // whose walk took long is measured less often (ten times its walk
    // time), so that the watch stays a small share of a core.
    absl::Duration disk_check_interval = absl::Seconds(1);
  };

  explicit PrivateDirs(Options options);
  PrivateDirs(std::string root, int64_t uid, int64_t gid, bool recycle,
              size_t max_spare = 32)
      : PrivateDirs(Options{std::move(root), uid, gid, recycle, max_spare}) {}
  // Finishes the returned directories, removes the spares.
  ~PrivateDirs();
  PrivateDirs(const PrivateDirs&) = delete;
  PrivateDirs& operator=(const PrivateDirs&) = delete;

  // A directory for a new worker, owned by uid:gid (-1: the defaults): a
  // recycled one, else a new one.
  absl::StatusOr<std::string> Take(int64_t uid = -1, int64_t gid = -1);
  // The worker using `path` runs as process `pid`, which leads its process
  // group: from now on its disk use is watched.
  void Attach(const std::string& path, pid_t pid);
  // Takes back the directory of a worker that has exited and been reaped;
  // `pgid` is the process group it led. Returns at once; the directory is
  // recycled or removed on the thread.
  void Return(const std::string& path, pid_t pgid);
  // Removes a directory that must not be handed on (a failed launch).
  void Discard(const std::string& path);
  // Whether the worker that led `pgid` was killed for going over the disk
  // cap, and if so why, for its death notice (once).
  std::optional<std::string> TakeDiskCapVerdict(pid_t pgid);

  // Waits until every directory returned so far has been dealt with.
  void Flush();
  size_t spare_count() const;

 private:
  struct Returned {
    std::string path;
    pid_t pgid;  // 0: discard
  };
  struct Watched {
    pid_t pid;
    absl::Time next_check;
  };
  void Run();
  void Finish(const Returned& returned);
  void CheckDiskUse(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<std::string> spare_ ABSL_GUARDED_BY(mu_);
  std::deque<Returned> returned_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // the thread is finishing one
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, Watched> watched_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<pid_t, std::string> over_cap_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PRIVATE_DIR_H_
