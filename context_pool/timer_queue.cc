#include "context_pool/timer_queue.h"

namespace pyexec {

void TimerQueue::Timer::Cancel() {
  if (id_ != 0) queue_->Erase(std::exchange(id_, 0));
}

TimerQueue::Timer TimerQueue::Schedule(absl::Time when, std::function<void()> fire) {
  const uint64_t id = next_id_++;
  auto it = entries_.emplace(std::make_pair(when, id), std::move(fire)).first;
  by_id_.emplace(id, it);
  return Timer(this, id);
}

absl::Time TimerQueue::next() const {
  return entries_.empty() ? absl::InfiniteFuture() : entries_.begin()->first.first;
}

void TimerQueue::FireDue(absl::Time now) {
  while (!entries_.empty() && entries_.begin()->first.first <= now) {
    auto it = entries_.begin();
    std::function<void()> fire = std::move(it->second);
    by_id_.erase(it->first.second);
    entries_.erase(it);
    fire();
  }
}

void TimerQueue::Erase(uint64_t id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;  // fired already
  entries_.erase(it->second);
  by_id_.erase(it);
}

}  // namespace pyexec
