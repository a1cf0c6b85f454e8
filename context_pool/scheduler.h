#ifndef PYEXEC_CONTEXT_POOL_SCHEDULER_H_
#define PYEXEC_CONTEXT_POOL_SCHEDULER_H_

// The pool's policy, with no I/O: which idle worker serves a session or a
// stateless call, which waiting stateless call goes first, when a worker is
// recycled for another principal or retired, and how many workers to spawn.
// The pool (context_pool.h) calls it under its lock and carries out what it
// decides; the tests drive it with plain values.
//
// Workers are known by their pool keys. An idle worker is "fresh" until it
// has run a call; a used one is "tainted" by the principal whose stateless
// calls it ran: it never serves a session, and only that principal's
// stateless calls run on it.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace pyexec {

class Scheduler {
 public:
  // `warm_workers`: idle, unbound workers to keep ready (--workers).
  explicit Scheduler(int warm_workers) : warm_workers_(warm_workers) {}

  // -- idle workers

  // A worker is ready and idle: fresh (`tainted` false), or used by the
  // stateless calls of `principal`. Most recently idle last.
  void AddIdle(uint64_t key, bool tainted, std::string principal = "");
  // The worker left the idle set otherwise (it died, was condemned). Unknown
  // keys are ignored.
  void RemoveIdle(uint64_t key);
  size_t idle_count() const { return idle_.size(); }
  bool IsIdle(uint64_t key) const;

  // Takes a fresh idle worker for a session, most recently idle first; 0 if
  // none.
  uint64_t TakeForSession();
  // Takes an idle worker for a stateless call of `principal`: the most
  // recently idle one that ran only its calls, else a fresh one; 0 if none.
  // Counts the call as running (StatelessEnded ends it).
  uint64_t TakeForStateless(absl::string_view principal);
  // A stateless call of `principal` has ended.
  void StatelessEnded(absl::string_view principal);
  // Stateless calls running now, of `principal` / in all.
  int RunningStateless(absl::string_view principal) const;
  int running_stateless() const { return running_total_; }

  // -- waiting stateless calls

  // What to do for the stateless calls waiting, in arrival order, as their
  // principals: start some on idle workers, and recycle idle workers of
  // other principals (the pool kills them and spawns fresh ones).
  // `spare_starting` is how many fresh workers are already on their way and
  // not promised to binds.
  struct Plan {
    struct Start {
      size_t waiting_index;  // into the `waiting` argument
      uint64_t worker;
    };
    std::vector<Start> starts;
    std::vector<uint64_t> recycle;
  };
  // The principal with the fewest running stateless calls goes first, then
  // the one served least recently, then the oldest call; so a principal with
  // a deep queue cannot starve the others. Started calls count as running,
  // recycled workers leave the idle set.
  Plan PlanStateless(const std::vector<std::string>& waiting, int spare_starting);

  // -- pool size

  // Idle used workers to retire while the unbound pool is past its size
  // (it grows past --workers when a Bind that had a spawn started for it
  // gives up). Least recently used first; they leave the idle set.
  std::vector<uint64_t> Trim(int starting, int waiting_binds);
  // How many workers to spawn to keep the warm pool and serve waiting binds.
  int SpawnsNeeded(int starting, int launching, int waiting_binds) const;

 private:
  struct Idle {
    uint64_t key;
    bool tainted;
    std::string principal;
  };
  void Started(absl::string_view principal);

  const int warm_workers_;
  std::vector<Idle> idle_;  // least recently idle first
  absl::flat_hash_map<std::string, int> running_;
  // When each principal's last stateless call started (a dispatch count).
  absl::flat_hash_map<std::string, uint64_t> last_served_;
  uint64_t dispatch_count_ = 0;
  int running_total_ = 0;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_SCHEDULER_H_
