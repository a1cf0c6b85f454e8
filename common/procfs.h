#ifndef PYEXEC_COMMON_PROCFS_H_
#define PYEXEC_COMMON_PROCFS_H_

// Reading Linux's /proc: for process supervision (the orphan reaper) and the
// benchmarks' figures.

#include <sys/types.h>

#include <string>
#include <vector>

namespace pyexec {

// Every process id listed in /proc (a snapshot: processes come and go).
std::vector<pid_t> AllPids();

// The whole text of a small file such as /proc/<pid>/stat; "" if unreadable.
std::string ReadProcFile(const std::string& path);

// Direct children of `pid`, of all its threads, from
// /proc/<pid>/task/*/children (a re-parented orphan is attached to whichever
// thread the kernel picked). Empty if the process is gone.
std::vector<pid_t> ChildPids(pid_t pid);

// The fields of /proc/<pid>/stat after the command, which may hold spaces:
// [0] state, [1] ppid, [2] pgrp, ... [11] utime, [12] stime, [13] cutime,
// [14] cstime (clock ticks). Empty if the process is gone.
std::vector<std::string> ProcStatFields(pid_t pid);

}  // namespace pyexec

#endif  // PYEXEC_COMMON_PROCFS_H_
