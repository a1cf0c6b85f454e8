#ifndef PYEXEC_CONTEXT_POOL_TIMER_QUEUE_H_
#define PYEXEC_CONTEXT_POOL_TIMER_QUEUE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace pyexec {

// Timers of an event loop, as objects: Schedule returns a Timer that cancels
// itself when destroyed or reassigned (as Envoy's dispatcher timers do), so
// that whoever owns the timer's subject owns the timer too and no flag or
// iterator into a map can go stale. Times are whatever clock the owner uses
// (the pool's MonotonicNow).
//
// Not thread-safe: the owner serialises every use (the pool's lock), and a
// Timer must not outlive its queue.
class TimerQueue {
 public:
  class Timer {
   public:
    Timer() = default;
    Timer(Timer&& other) : queue_(other.queue_), id_(std::exchange(other.id_, 0)) {}
    Timer& operator=(Timer&& other) {
      if (this != &other) {
        Cancel();
        queue_ = other.queue_;
        id_ = std::exchange(other.id_, 0);
      }
      return *this;
    }
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    ~Timer() { Cancel(); }

    // Stops the timer if it has not fired; it will not fire afterwards.
    void Cancel();
    // Scheduled and not yet fired or cancelled.
    bool armed() const { return id_ != 0 && queue_->Armed(id_); }

   private:
    friend class TimerQueue;
    Timer(TimerQueue* queue, uint64_t id) : queue_(queue), id_(id) {}
    TimerQueue* queue_ = nullptr;
    uint64_t id_ = 0;
  };

  // Runs `fire` once, at FireDue's first call at or after `when`, unless
  // the returned timer is cancelled or destroyed first.
  [[nodiscard]] Timer Schedule(absl::Time when, std::function<void()> fire);

  // The earliest pending time, or InfiniteFuture.
  absl::Time next() const;

  // Runs every timer due at `now`, earliest first (one scheduled for `now`
  // by a callback runs too). A callback may schedule or cancel timers.
  void FireDue(absl::Time now);

  size_t size() const { return by_id_.size(); }

 private:
  using Entries = std::map<std::pair<absl::Time, uint64_t>, std::function<void()>>;
  bool Armed(uint64_t id) const { return by_id_.contains(id); }
  void Erase(uint64_t id);

  Entries entries_;
  absl::flat_hash_map<uint64_t, Entries::iterator> by_id_;
  uint64_t next_id_ = 1;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_TIMER_QUEUE_H_
