#include "context_pool/uid_pool.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/procfs.h"

namespace pyexec {
namespace {

// Whether any process runs with `uid` as its real, effective or saved uid.
bool AnyProcessOf(uint32_t uid) {
  const std::vector<pid_t> pids = AllPids();
  if (pids.empty()) return true;  // /proc unreadable (it lists us, at least): assume so
  for (pid_t pid : pids) {
    for (absl::string_view line :
         absl::StrSplit(ReadProcFile(absl::StrCat("/proc/", pid, "/status")), '\n')) {
      if (!absl::ConsumePrefix(&line, "Uid:")) continue;
      for (absl::string_view field : absl::StrSplit(line, absl::ByAnyChar(" \t"),
                                                    absl::SkipEmpty())) {
        uint32_t id;
        if (absl::SimpleAtoi(field, &id) && id == uid) return true;
      }
      break;
    }
  }
  return false;
}

}  // namespace

UidPool::UidPool(uint32_t first, uint32_t count, bool processes_stay_in_group)
    : processes_stay_in_group_(processes_stay_in_group) {
  absl::MutexLock lock(&mu_);
  for (uint32_t i = 0; i < count; ++i) free_.push_back(first + i);
}

absl::StatusOr<std::pair<uint32_t, uint32_t>> UidPool::ParseRange(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '-');
  uint32_t first, last;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &first) ||
      !absl::SimpleAtoi(parts[1], &last) || first == 0 || last < first) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--worker_uid_range=", text, ": expected FIRST-LAST, 0 < FIRST <= LAST"));
  }
  return std::make_pair(first, last);
}

bool UidPool::StillInUse(const Returned& returned) const {
  // pgid 0: no worker was started with the uid (a failed launch).
  if (returned.pgid > 0 && (kill(-returned.pgid, 0) == 0 || errno != ESRCH)) return true;
  return !processes_stay_in_group_ && AnyProcessOf(returned.uid);
}

absl::StatusOr<uint32_t> UidPool::Take() {
  absl::MutexLock lock(&mu_);
  if (free_.empty()) {
    // Lingering uids free up as their processes go: look again.
    for (auto it = lingering_.begin(); it != lingering_.end();) {
      if (StillInUse(*it)) {
        ++it;
      } else {
        free_.push_back(it->uid);
        it = lingering_.erase(it);
      }
    }
  }
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        "no_workers_available: every uid of --worker_uid_range is in use");
  }
  uint32_t uid = free_.front();
  free_.pop_front();
  return uid;
}

void UidPool::Return(uint32_t uid, pid_t pgid) {
  Returned returned{uid, pgid};
  const bool in_use = StillInUse(returned);
  absl::MutexLock lock(&mu_);
  if (in_use) {
    lingering_.push_back(returned);
  } else {
    free_.push_back(uid);
  }
}

size_t UidPool::free_count() const {
  absl::MutexLock lock(&mu_);
  return free_.size();
}

}  // namespace pyexec
