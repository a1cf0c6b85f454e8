#include "context_pool/ordered_delivery.h"

#include <utility>

namespace pyexec {

void OrderedDelivery::Put(uint64_t seq, std::function<void()> deliver) {
  {
    absl::MutexLock lock(&mu_);
    pending_.emplace(seq, std::move(deliver));
    if (draining_) return;  // the draining thread will get to it
    draining_ = true;
  }
  while (true) {
    std::function<void()> next;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(next_);
      if (it == pending_.end()) {
        draining_ = false;
        return;
      }
      next = std::move(it->second);
      pending_.erase(it);
      ++next_;
    }
    next();
  }
}

}  // namespace pyexec
