#ifndef PYEXEC_CONTEXT_POOL_UID_POOL_H_
#define PYEXEC_CONTEXT_POOL_UID_POOL_H_

// A uid of its own for each worker (--worker_uid_range=A-B), where pyexecd
// may change uid: sessions are then apart in the kernel's oldest sense
// (files, signals, ptrace, RLIMIT_NPROC), with or without Landlock. A uid
// is handed out again only once nothing of its last worker runs: its
// process group is gone (all the seccomp filter lets user code create),
// and without the filter, no process of the uid is left at all.

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace pyexec {

class UidPool {
 public:
  // Uids [first, first + count). `processes_stay_in_group`: the seccomp
  // filter keeps every process of a worker in its process group.
  UidPool(uint32_t first, uint32_t count, bool processes_stay_in_group);

  // Parses "A-B" (inclusive, A <= B, neither 0).
  static absl::StatusOr<std::pair<uint32_t, uint32_t>> ParseRange(absl::string_view text);

  // A free uid, or RESOURCE_EXHAUSTED when every one is in use or still
  // has processes.
  absl::StatusOr<uint32_t> Take();
  // The worker that ran as `uid` and led `pgid` has exited (pgid 0: none
  // was started).
  void Return(uint32_t uid, pid_t pgid);

  size_t free_count() const;

 private:
  struct Returned {
    uint32_t uid;
    pid_t pgid;
  };
  bool StillInUse(const Returned& returned) const;

  const bool processes_stay_in_group_;
  mutable absl::Mutex mu_;
  std::deque<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  // Returned, but with processes left when last checked.
  std::vector<Returned> lingering_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_UID_POOL_H_
