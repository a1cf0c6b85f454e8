// The zygote's malloc heap, made cheap to share with the workers it forks.
//
// A forked worker shares the zygote's heaps copy-on-write: a page stays
// shared until either process writes to it. glibc keeps free chunks in lists
// threaded through the chunks themselves, so a worker's first mallocs, which
// take and sort those free chunks, write to pages all over the zygote's
// heap, and each such page becomes the worker's own copy. CPython's
// small-object allocator (obmalloc) does the same with the free blocks of
// its pools. These helpers leave the zygote's heaps with no free chunks or
// blocks for a worker to take: its allocations then come from fresh memory,
// in pages of its own.
#ifndef PYEXEC_WORKER_ZYGOTE_HEAP_H_
#define PYEXEC_WORKER_ZYGOTE_HEAP_H_

#include <cstddef>

namespace pyexec {

// Called in the zygote before it forks: turns glibc's fastbins off, which
// merges the free chunks they hold into the ordinary bins and keeps new ones
// out. Without it, a worker's first mallopt() (ConfineWorker's) or first
// large malloc consolidates the fastbins, writing to every one of them.
void StopMallocFastbins();

// Called in each worker first thing after the fork: fastbins back on at
// glibc's default size (there are none to consolidate).
void RestoreMallocFastbins();

// Called in the zygote before it forks, after StopMallocFastbins: takes every
// free chunk of the heap (the holes below its top, and the calling thread's
// tcache) and keeps it allocated for good. The zygote pays what the holes
// held once, shared by all its workers; each worker saves the pages that
// its first mallocs would have copied. Returns the bytes taken.
size_t FillMallocHoles();

// Called in the zygote before it forks, with the GIL, before
// FillMallocHoles (a new obmalloc arena grows a malloc'd table): the same
// for CPython's small-object allocator (3.11's layout). For each of its size
// classes, takes the free blocks of partly used pools until a block comes
// from a fresh pool, and keeps them. A worker's small objects then fill pools of their
// own instead of writing into free blocks (and the pool headers) spread
// over the zygote's pools. Returns the blocks taken.
size_t FillObjectPools();

// Whether malloc is glibc's (not a sanitizer's): FillMallocHoles does
// nothing otherwise.
bool GlibcMallocInUse();

// Bytes in free chunks below the top of the heap (glibc's mallinfo2:
// free space minus the releasable top).
size_t MallocHoleBytes();

}  // namespace pyexec

#endif  // PYEXEC_WORKER_ZYGOTE_HEAP_H_
