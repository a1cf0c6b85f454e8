#ifndef PYEXEC_SERVER_NAMED_CALLS_H_
#define PYEXEC_SERVER_NAMED_CALLS_H_

// The calls that clients named (metadata x-pyexec-call-id) on each session,
// so that an Interrupt that names one reaches it wherever it is: running,
// waiting, or not arrived yet. A client sends a call and then, at once, an
// Interrupt for it; the two travel on different HTTP/2 streams and the
// Interrupt may well arrive first. It is then kept for kHoldFor, and the call
// ends CANCELLED the moment it arrives instead of running until its
// deadline.
//
// Thread-safe.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "context_pool/pool_ids.h"

namespace pyexec {

class NamedCalls {
 public:
  // How long an Interrupt waits for the call it names.
  static constexpr absl::Duration kHoldFor = absl::Seconds(10);
  // Names of ended calls remembered per session (to answer "already
  // ended" rather than wait for them).
  static constexpr size_t kRememberEnded = 64;

  explicit NamedCalls(std::function<absl::Time()> now = MonotonicNow) : now_(std::move(now)) {}

  // The call `name` arrived on `session`. False if an Interrupt for it came
  // first: the call must end CANCELLED without running (and is forgotten).
  bool Arrive(const std::string& session, const std::string& name);
  // The arrived call was submitted as pool call `id`; `interrupt` stops it
  // (now, if an Interrupt landed between Arrive and Started).
  void Started(const std::string& session, const std::string& name, CallId id,
               const std::function<void(CallId)>& interrupt);
  // The call ended.
  void Ended(const std::string& session, const std::string& name);

  // An Interrupt names `name` on `session`. Returns whether it interrupts
  // something: the call running or waiting (through `interrupt`), the call
  // that has arrived and is being submitted, or the call yet to arrive
  // (held). False for a call that has already ended.
  bool Interrupt(const std::string& session, const std::string& name,
                 const std::function<void(CallId)>& interrupt);

  // Forgets a session's names (it ended).
  void ForgetSession(const std::string& session);

 private:
  struct Entry {
    enum class State { kHeldInterrupt, kArrived, kRunning } state;
    CallId id = 0;
    bool interrupt_pending = false;  // kArrived: interrupt once started
    absl::Time held_until;           // kHeldInterrupt
  };
  struct Session {
    absl::flat_hash_map<std::string, Entry> calls;
    std::deque<std::string> ended;
  };
  void DropExpiredHolds(Session& session, absl::Time now);

  const std::function<absl::Time()> now_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_NAMED_CALLS_H_
