#include "server/file_limit.h"

#include <sys/resource.h>

#include "absl/strings/str_cat.h"

namespace pyexec {

uint64_t RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return limit.rlim_cur;
}

uint64_t DescriptorsNeeded(int max_workers, int workers) {
  return static_cast<uint64_t>(max_workers) + static_cast<uint64_t>(workers) +
         kDescriptorReserve;
}

std::string FileLimitWarning(uint64_t limit, int max_workers, int workers) {
  const uint64_t needed = DescriptorsNeeded(max_workers, workers);
  if (limit == RLIM_INFINITY || limit >= needed) return "";
  return absl::StrCat("the open-file limit (RLIMIT_NOFILE ", limit,
                      ", the hard limit) is below the ", needed,
                      " descriptors that --max_workers=", max_workers, " and --workers=",
                      workers, " may need (one per worker, ", kDescriptorReserve,
                      " for connections and the rest): Binds past it are refused with "
                      "RESOURCE_EXHAUSTED; raise the hard limit (ulimit -Hn, LimitNOFILE=, "
                      "the container runtime's nofile) or lower --max_workers");
}

}  // namespace pyexec
