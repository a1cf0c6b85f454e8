#include "worker/zygote_heap.h"

#include <Python.h>
#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace pyexec {
namespace {

// glibc's default M_MXFAST (DEFAULT_MXFAST in malloc.c).
constexpr int kGlibcDefaultMaxFast = 64 * sizeof(size_t) / 4;

// The largest request glibc serves from its tcache (chunks up to 1040 bytes).
constexpr size_t kTcacheMaxRequest = 1032;

// malloc for keeps. Compilers drop a malloc whose result is never used
// (and a malloc-free pair): the empty asm takes the pointer, so they cannot.
void* MallocKept(size_t size) {
  void* chunk = malloc(size);
  asm volatile("" : : "r"(chunk) : "memory");
  return chunk;
}

// Bytes in free chunks below the top of the heap.
size_t HoleBytes(const struct mallinfo2& info) { return info.fordblks - info.keepcost; }

// Where a malloc found its chunk, told from mallinfo2 taken around it.
enum class Source { kHole, kTcache, kTopOrMmap };

Source SourceOf(const struct mallinfo2& before, const struct mallinfo2& after) {
  if (HoleBytes(after) < HoleBytes(before)) return Source::kHole;
  // A tcache chunk counts as in use already: taking one changes nothing.
  // Splitting the top shrinks it (or grows the heap); mmap counts apart.
  if (after.keepcost == before.keepcost && after.arena == before.arena &&
      after.hblkhd == before.hblkhd) {
    return Source::kTcache;
  }
  return Source::kTopOrMmap;
}

// Requests from large to small: big holes are taken in a few bites, and
// each tcache size (16-byte steps) is drained exactly. The largest stays
// under glibc's default mmap threshold (128 KiB): freeing an mmapped chunk
// would raise the threshold for the zygote and all its workers. (Computed,
// not listed in a vector: freeing its buffer would leave a chunk behind.)
constexpr size_t kLargestRequest = size_t{64} << 10;
size_t NextRequest(size_t request) {
  if (request > 2 * kTcacheMaxRequest) return request / 2;
  if (request > kTcacheMaxRequest) return kTcacheMaxRequest;
  return request >= 24 + 16 ? request - 16 : 0;
}

// CPython 3.10-3.12's obmalloc on 64-bit builds (Objects/obmalloc.c): 16 KiB
// pools, 32 size classes 16 bytes apart up to 512 bytes, and at the start
// of each pool this header. Only read, to tell a fresh pool (one block in
// use: the one just taken) from a partly used one.
constexpr uintptr_t kObjectPoolMask = (uintptr_t{16} << 10) - 1;
constexpr size_t kObjectClassStep = 16;
constexpr size_t kObjectLargestSmallRequest = 512;
struct ObjectPoolHeader {
  union {
    void* padding;
    unsigned int count;  // blocks in use
  } ref;
  void* freeblock;
  void* nextpool;
  void* prevpool;
  unsigned int arenaindex;
  unsigned int szidx;  // size class: block size / 16 - 1
  unsigned int nextoffset;
  unsigned int maxnextoffset;
};
static_assert(sizeof(ObjectPoolHeader) == 48);

const ObjectPoolHeader& PoolOf(const void* block) {
  return *reinterpret_cast<const ObjectPoolHeader*>(reinterpret_cast<uintptr_t>(block) &
                                                    ~kObjectPoolMask);
}

// Bounds the blocks taken per class, should no fresh pool ever show.
constexpr int kObjectBlocksPerClassMax = 1 << 16;

}  // namespace

void StopMallocFastbins() { mallopt(M_MXFAST, 0); }

void RestoreMallocFastbins() { mallopt(M_MXFAST, kGlibcDefaultMaxFast); }

size_t FillObjectPools() {
  // The pool layout below is 3.10's to 3.12's, and only pymalloc has pools
  // (PYTHONMALLOC=malloc or a debug allocator has none: a block's rounded
  // address would be no header, and perhaps not mapped at all).
  if (PY_VERSION_HEX < 0x030A0000 || PY_VERSION_HEX >= 0x030D0000) return 0;
  const char* allocator = _PyMem_GetCurrentAllocatorName();
  if (allocator == nullptr || strcmp(allocator, "pymalloc") != 0) return 0;
  size_t taken = 0;
  for (size_t size = kObjectClassStep; size <= kObjectLargestSmallRequest;
       size += kObjectClassStep) {
    for (int i = 0; i < kObjectBlocksPerClassMax; ++i) {
      void* block = PyObject_Malloc(size);
      if (block == nullptr) return taken;
      ++taken;  // kept for good, as the malloc'd holes are
      const ObjectPoolHeader& pool = PoolOf(block);
      // A header that does not fit the block is another obmalloc than 3.10-3.12's
      // (or Python's debug allocator): take nothing more.
      if (pool.szidx != size / kObjectClassStep - 1) return taken;
      if (pool.ref.count == 1) break;  // a fresh pool: no partly used one is left
    }
  }
  return taken;
}

size_t MallocHoleBytes() { return HoleBytes(mallinfo2()); }

bool GlibcMallocInUse() {
  // A request past the tcache's sizes and under the mmap threshold comes
  // from a hole or the top: glibc's own figures move, unless another
  // allocator (ASan's, say) serves malloc. Freed, it goes back where it was.
  const struct mallinfo2 before = mallinfo2();
  void* probe = MallocKept(4096);
  const struct mallinfo2 after = mallinfo2();
  const bool glibc = before.hblkhd != after.hblkhd || before.arena != after.arena ||
                     before.fordblks != after.fordblks || before.uordblks != after.uordblks;
  free(probe);
  return glibc;
}

size_t FillMallocHoles() {
  if (!GlibcMallocInUse()) return 0;
  size_t taken = 0;
  for (size_t request = kLargestRequest; request != 0; request = NextRequest(request)) {
    // Takes that leave every figure as it was come from the tcache (7
    // chunks a size by default, plus those a small bin stashes there); a
    // tcache tuned larger is left partly full rather than drained forever.
    int unseen = 0;
    while (unseen < 32) {
      const struct mallinfo2 before = mallinfo2();
      void* chunk = MallocKept(request);
      if (chunk == nullptr) return taken;
      const Source source = SourceOf(before, mallinfo2());
      unseen = source == Source::kHole ? 0 : unseen + 1;
      if (source == Source::kTopOrMmap) {
        // No hole of this size is left. A chunk past the tcache's sizes
        // goes straight back to the top (fastbins are off) or is unmapped;
        // a smaller one would wait in the tcache for a worker's malloc, so
        // it stays taken: at most one per size, about 33 KiB in all.
        if (request > kTcacheMaxRequest) {
          free(chunk);
        } else {
          taken += request;
        }
        break;
      }
      taken += request;  // kept allocated for good: the hole is gone
    }
  }
  return taken;
}

}  // namespace pyexec
