#include "context_pool/scheduler.h"

#include <algorithm>
#include <utility>

namespace pyexec {

void Scheduler::AddIdle(uint64_t key, bool tainted, std::string principal) {
  idle_.push_back({key, tainted, std::move(principal)});
}

void Scheduler::RemoveIdle(uint64_t key) {
  auto it = std::find_if(idle_.begin(), idle_.end(),
                         [key](const Idle& i) { return i.key == key; });
  if (it != idle_.end()) idle_.erase(it);
}

bool Scheduler::IsIdle(uint64_t key) const {
  return std::any_of(idle_.begin(), idle_.end(),
                     [key](const Idle& i) { return i.key == key; });
}

uint64_t Scheduler::TakeForSession() {
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if (!it->tainted) {
      const uint64_t key = it->key;
      idle_.erase(std::next(it).base());
      return key;
    }
  }
  return 0;
}

uint64_t Scheduler::TakeForStateless(absl::string_view principal) {
  auto chosen = idle_.rend();
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if (!it->tainted) {
      if (chosen == idle_.rend()) chosen = it;
    } else if (it->principal == principal) {
      chosen = it;  // a worker already used by this principal is best
      break;
    }
  }
  if (chosen == idle_.rend()) return 0;
  const uint64_t key = chosen->key;
  idle_.erase(std::next(chosen).base());
  Started(principal);
  return key;
}

void Scheduler::Started(absl::string_view principal) {
  ++running_[principal];
  ++running_total_;
  last_served_[principal] = ++dispatch_count_;
}

void Scheduler::StatelessEnded(absl::string_view principal) {
  auto it = running_.find(principal);
  if (it == running_.end()) return;
  --running_total_;
  if (--it->second <= 0) running_.erase(it);
}

int Scheduler::RunningStateless(absl::string_view principal) const {
  auto it = running_.find(principal);
  return it == running_.end() ? 0 : it->second;
}

Scheduler::Plan Scheduler::PlanStateless(const std::vector<std::string>& waiting,
                                         int spare_starting) {
  Plan plan;
  std::vector<bool> handled(waiting.size(), false);  // started or blocked
  std::vector<size_t> blocked;  // no usable idle worker this pass
  size_t left = waiting.size();
  auto recycle = [&](uint64_t key) {
    RemoveIdle(key);
    plan.recycle.push_back(key);
  };
  while (!idle_.empty() && left > 0) {
    size_t best = waiting.size();
    std::pair<int, uint64_t> best_rank;
    for (size_t i = 0; i < waiting.size(); ++i) {
      if (handled[i]) continue;
      auto served = last_served_.find(waiting[i]);
      std::pair<int, uint64_t> rank = {
          RunningStateless(waiting[i]), served == last_served_.end() ? 0 : served->second};
      if (best == waiting.size() || rank < best_rank) {
        best = i;
        best_rank = rank;
      }
    }
    handled[best] = true;
    --left;
    if (uint64_t key = TakeForStateless(waiting[best]); key != 0) {
      plan.starts.push_back({best, key});
      continue;
    }
    // Every idle worker ran another principal's calls. A principal with
    // nothing running must not starve: recycle the least recently used
    // idle worker for it (unless a fresh one is already on its way).
    // Otherwise another waiting call may still use the idle workers.
    blocked.push_back(best);
    if (best_rank.first == 0) {
      if (spare_starting > 0) {
        --spare_starting;
      } else {
        recycle(idle_.front().key);
      }
    }
  }
  // Idle workers left now are of no use to any waiting call. Rebalance: a
  // blocked principal gets a worker of a principal that runs at least two
  // more stateless calls than it does. Each recycle costs a spawn, so shares
  // only move towards equal, never back and forth.
  for (size_t i : blocked) {
    if (idle_.empty()) break;
    const int mine = RunningStateless(waiting[i]);
    if (mine == 0) continue;  // handled above
    if (spare_starting > 0) {
      --spare_starting;
      continue;
    }
    for (const Idle& idle : idle_) {
      if (RunningStateless(idle.principal) > mine + 1) {
        recycle(idle.key);
        break;
      }
    }
  }
  return plan;
}

std::vector<uint64_t> Scheduler::Trim(int starting, int waiting_binds) {
  std::vector<uint64_t> retired;
  while (static_cast<int>(idle_.size()) + running_total_ + starting >
         warm_workers_ + waiting_binds) {
    auto lru = std::find_if(idle_.begin(), idle_.end(),
                            [](const Idle& i) { return i.tainted; });
    if (lru == idle_.end()) break;
    retired.push_back(lru->key);
    idle_.erase(lru);
  }
  return retired;
}

int Scheduler::SpawnsNeeded(int starting, int launching, int waiting_binds) const {
  const int unbound = static_cast<int>(idle_.size()) + running_total_ + starting + launching;
  const int for_pool = std::max(0, warm_workers_ - unbound);
  // Binds need fresh workers: idle ones that never ran a call, or ones on
  // their way (including those just counted for the pool). Only waiters
  // beyond those get spawns of their own, so that a replacement already
  // starting serves a Bind instead of a second spawn the pool would then
  // have to retire.
  int fresh = starting + launching + for_pool;
  for (const Idle& idle : idle_) fresh += idle.tainted ? 0 : 1;
  return for_pool + std::max(0, waiting_binds - fresh);
}

}  // namespace pyexec
