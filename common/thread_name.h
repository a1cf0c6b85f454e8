#ifndef PYEXEC_COMMON_THREAD_NAME_H_
#define PYEXEC_COMMON_THREAD_NAME_H_

#include <pthread.h>

namespace pyexec {

// Names the calling thread (at most 15 characters), so that top -H, perf and
// pyexec_bench's per-thread costs can tell pyexecd's threads apart.
inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace pyexec

#endif  // PYEXEC_COMMON_THREAD_NAME_H_
