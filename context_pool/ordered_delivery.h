#ifndef PYEXEC_CONTEXT_POOL_ORDERED_DELIVERY_H_
#define PYEXEC_CONTEXT_POOL_ORDERED_DELIVERY_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace pyexec {

// Hands a streamed call's events, then its outcome, to their receivers one
// at a time and in the order the worker sent them. They are handed out by
// the pool's I/O thread and by gRPC threads that lift a backpressure pause
// (which read the frames buffered meanwhile); whichever thread holds the
// next item in order delivers it and every later one already there. Nobody
// waits, so a receiver that calls back into the pool (EventConsumed) cannot
// deadlock. Thread-safe.
class OrderedDelivery {
 public:
  // Queues item `seq` (0, 1, 2, ... with no gaps) and delivers what is now
  // in order, on the calling thread unless another thread is delivering.
  void Put(uint64_t seq, std::function<void()> deliver);

 private:
  absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_ORDERED_DELIVERY_H_
