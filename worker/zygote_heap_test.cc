#include "worker/zygote_heap.h"

#include <malloc.h>

#include <cstdlib>
#include <vector>

#include <Python.h>

#include <cstdint>

#include "gtest/gtest.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PYEXEC_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define PYEXEC_ASAN 1
#endif

namespace pyexec {
namespace {

#ifdef PYEXEC_ASAN
constexpr bool kGlibcMalloc = false;  // ASan serves malloc
#else
constexpr bool kGlibcMalloc = true;
#endif

// A heap like the zygote's after CPython's start-up: many live chunks with
// free ones between them.
std::vector<void*> FragmentHeap() {
  std::vector<void*> chunks;
  for (int i = 0; i < 4000; ++i) {
    chunks.push_back(malloc(24 + (i * 37) % 3000));
    asm volatile("" : : "r"(chunks.back()) : "memory");
  }
  std::vector<void*> kept;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i % 2 == 0) {
      free(chunks[i]);
    } else {
      kept.push_back(chunks[i]);
    }
  }
  return kept;
}

TEST(ZygoteHeapTest, FillingTakesEveryHoleSoTheNextMallocComesFromTheTop) {
  std::vector<void*> live = FragmentHeap();
  StopMallocFastbins();
  ASSERT_EQ(GlibcMallocInUse(), kGlibcMalloc);
  if (!kGlibcMalloc) {
    // A sanitizer's allocator: nothing of glibc's to fill, and nothing taken.
    EXPECT_EQ(FillMallocHoles(), 0u);
    RestoreMallocFastbins();
    for (void* p : live) free(p);
    return;
  }
  live.reserve(live.size() + 100);  // its growth would free a chunk below
  const size_t holes = MallocHoleBytes();
  ASSERT_GT(holes, 1000u * 1000u) << "the set-up made no holes to fill";
  const size_t taken = FillMallocHoles();
  EXPECT_GE(taken, holes - 64 * 1024) << "taken " << taken << " of " << holes;
  EXPECT_EQ(MallocHoleBytes(), 0u);

  // Small requests of every tcache size now split the top of the heap:
  // nothing in a bin or the tcache is left for them.
  for (size_t request = 24; request <= 1032; request += 16) {
    const struct mallinfo2 before = mallinfo2();
    void* p = malloc(request);
    asm volatile("" : : "r"(p) : "memory");
    const struct mallinfo2 after = mallinfo2();
    EXPECT_TRUE(after.keepcost < before.keepcost || after.arena > before.arena)
        << request << "-byte request did not come from the top: keepcost " << before.keepcost << " -> " << after.keepcost << ", arena " << before.arena << " -> " << after.arena << ", free " << before.fordblks << " -> " << after.fordblks;
    live.push_back(p);
  }
  RestoreMallocFastbins();
  for (void* p : live) free(p);
}

TEST(ZygoteHeapTest, FillingAnUnfragmentedHeapTakesLittle) {
  StopMallocFastbins();
  FillMallocHoles();  // whatever gtest's start-up left
  // At most one tcache-sized chunk of each size from the top, and nothing
  // past the tcache's sizes.
  EXPECT_LE(FillMallocHoles(), 64u * 1040u);
  RestoreMallocFastbins();
}

TEST(ZygoteHeapTest, FillingObjectPoolsLeavesEachClassAFreshPool) {
  Py_InitializeEx(0);
  // Partly used pools of every class: blocks taken, every other one freed.
  std::vector<void*> live;
  for (size_t size = 16; size <= 512; size += 16) {
    std::vector<void*> blocks;
    for (int i = 0; i < 300; ++i) blocks.push_back(PyObject_Malloc(size));
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (i % 2 == 0) {
        PyObject_Free(blocks[i]);
      } else {
        live.push_back(blocks[i]);
      }
    }
  }
  EXPECT_GT(FillObjectPools(), 32u * 150u);  // at least the freed halves
  // Each class's next block is the second of the fresh pool the fill
  // stopped at (its first block sits after the 48-byte pool header): no
  // free block of an older pool is left.
  for (size_t size = 16; size <= 512; size += 16) {
    void* block = PyObject_Malloc(size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block) & ((16 << 10) - 1), 48 + size)
        << size << "-byte block at " << block;
    live.push_back(block);
  }
  for (void* block : live) PyObject_Free(block);
}

}  // namespace
}  // namespace pyexec
