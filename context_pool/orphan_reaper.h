#ifndef PYEXEC_CONTEXT_POOL_ORPHAN_REAPER_H_
#define PYEXEC_CONTEXT_POOL_ORPHAN_REAPER_H_

// Processes that user code starts belong to its worker's process group.
// When the worker ends, the pool kills that group, and the kernel re-parents
// the worker's children to the nearest child subreaper or to PID 1, which is
// pyexecd itself in a container. Nobody else would wait() for them: each
// would stay a zombie, holding a PID, for the life of the pod.
//
// A worker and the zygote each lead their own process group (pgid == pid);
// such an orphan is in its dead worker's group (pgid != pid). That tells them
// apart without asking the pool, which reaps its own workers itself.

namespace pyexec {

// Reaps this process's zombie children that do not lead their own process
// group. Returns how many it reaped. Safe to call from any thread, at any
// time; a no-op where orphans go to another init (this process is neither
// PID 1 nor a child subreaper), and, once WatchChildExits ran, when no child
// has exited since the last scan: the scan reads /proc for every child, one
// per session, so an idle server with many sessions must not repeat it.
int ReapOrphanedChildren();

// Installs a SIGCHLD handler (SA_RESTART) that notes that a child exited.
// Call once, early in main.
void WatchChildExits();

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_ORPHAN_REAPER_H_
