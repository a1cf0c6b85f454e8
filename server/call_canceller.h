#ifndef PYEXEC_SERVER_CALL_CANCELLER_H_
#define PYEXEC_SERVER_CALL_CANCELLER_H_

#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "context_pool/pool_ids.h"

namespace pyexec {

// The one cancel-before-id handshake of the reactors: gRPC may run a
// reactor's OnCancel (client gone, deadline) before the call it must stop
// has its pool id, or at the same time. Whichever comes second cancels.
// Thread-safe.
class CallCanceller {
 public:
  explicit CallCanceller(std::function<void(CallId)> cancel) : cancel_(std::move(cancel)) {}

  // The call now has `id` (0: it was answered at once); cancels it at once
  // if the client went away first.
  void Set(CallId id) {
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      id_ = id;
      cancel = cancelled_ && id != 0;
    }
    if (cancel) cancel_(id);
  }
  // The client went away: cancels the call now if it has an id, else when
  // it gets one.
  void Cancel() {
    CallId id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = id_;
    }
    if (id != 0) cancel_(id);
  }
  CallId id() const {
    absl::MutexLock lock(&mu_);
    return id_;
  }

 private:
  const std::function<void(CallId)> cancel_;
  mutable absl::Mutex mu_;
  CallId id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_CALL_CANCELLER_H_
