#ifndef PYEXEC_SERVER_PYEXEC_CORE_H_
#define PYEXEC_SERVER_PYEXEC_CORE_H_

#include <functional>
#include <string>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "context_pool/context_pool.h"
#include "pyexec/v1/pyexec.pb.h"
#include "server/session_table.h"

namespace pyexec {

// Settings of PyExecCore.
struct CoreOptions {
  // Idle timeout of a session that asks for none.
  absl::Duration session_idle_timeout = absl::Minutes(10);
  // Longest idle timeout a Bind may ask for.
  absl::Duration max_session_idle_timeout = absl::Hours(24);
  // Live object references a session may hold; a result that would make
  // more is refused with RESOURCE_EXHAUSTED.
  uint32_t max_refs_per_session = 10000;
  // Most sessions one principal may hold at once; 0 = no limit.
  int max_sessions_per_principal = 0;
  // Deepest container nesting of request values (the workers' limit too).
  int max_value_depth = kDefaultMaxValueDepth;
};

// Receives the outcome of an RPC once its response has been filled in.
using RpcDone = std::function<void(absl::Status status)>;

// Receives the events of a streaming RPC in order, all before its RpcDone
// (the last one, on success, is the `end` event). `ack` is nonzero for
// events that hold back the worker: the receiver calls EventConsumed(ack)
// once it has written the event, which is the stream's backpressure.
template <typename Event>
using StreamSink = std::function<void(Event event, CallId ack)>;

class PyExecCore;

// One Bind in progress, shared by the core and the RPC. Thread-safe.
class BindHandle {
 public:
  BindHandle(PyExecCore* core, absl::string_view principal)
      : core_(core), principal_(principal) {}
  // The client is gone: a worker granted later is released and the Bind
  // ends CANCELLED; a session already made is unbound.
  void Cancel();

 private:
  friend class PyExecCore;
  PyExecCore* const core_;
  const std::string principal_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::string token_ ABSL_GUARDED_BY(mu_);
};

// The PyExec API's logic, free of gRPC: validates requests, resolves
// sessions, runs calls on the pool and fills in responses. The gRPC service
// is a thin adapter over it.
//
// Every entry point takes the authenticated `principal` making the call
// ("" when authentication is off). A session belongs to the principal that
// bound it; anyone else's use of its token is NOT_FOUND.
//
// Thread-safe. `done` callbacks may run on the calling thread (for requests
// answered at once) or on the pool's I/O thread; the response object must
// stay alive until then.
class PyExecCore {
 public:
  // `sessions` and `pool` must outlive the core.
  PyExecCore(const CoreOptions& options, SessionTable* sessions,
             ContextPool* pool);

  // RESOURCE_EXHAUSTED past max_sessions_per_principal. The returned handle
  // lets the RPC say that its client went away (cancelled, disconnected,
  // deadline), so that the session is not created, or is unbound at once,
  // instead of idling for its timeout.
  std::shared_ptr<BindHandle> Bind(absl::string_view principal,
                                   const v1::BindRequest& request,
                                   absl::Time deadline,
                                   v1::BindResponse* response, RpcDone done);
  // Always OK: unknown, expired and other principals' tokens are fine (and
  // left alone).
  absl::Status Unbind(absl::string_view principal,
                      const v1::UnbindRequest& request);

  // Eval/Exec/Call return the pool's CallId, for Cancel (0 if the call was
  // answered at once).
  CallId Eval(absl::string_view principal, const v1::EvalRequest& request,
              absl::Time deadline, v1::EvalResponse* response, RpcDone done);
  CallId Exec(absl::string_view principal, const v1::ExecRequest& request,
              absl::Time deadline, v1::ExecResponse* response, RpcDone done);
  CallId Call(absl::string_view principal, const v1::CallRequest& request,
              absl::Time deadline, v1::CallResponse* response, RpcDone done);
  // The client went away: interrupts the call.
  void Cancel(CallId call) { pool_->Cancel(call); }

  // Exec and Call with their output (and Call's values: each item of an
  // iterator result, else the result) streamed to `sink` as they come.
  CallId ExecStream(absl::string_view principal, const v1::ExecRequest& request,
                    absl::Time deadline, StreamSink<v1::ExecEvent> sink,
                    RpcDone done);
  CallId CallStream(absl::string_view principal, const v1::CallRequest& request,
                    absl::Time deadline, StreamSink<v1::CallEvent> sink,
                    RpcDone done);
  // A stream event has been written; see StreamSink.
  void EventConsumed(CallId ack) { pool_->EventConsumed(ack); }

  // Drops refs of the session (after any call queued on it).
  CallId Release(absl::string_view principal, const v1::ReleaseRequest& request,
                 absl::Time deadline, v1::ReleaseResponse* response,
                 RpcDone done);
  // Interrupts the call running on the session. NOT_FOUND for an unknown
  // session; OK with interrupted=false when nothing runs.
  absl::Status Interrupt(absl::string_view principal,
                         const v1::InterruptRequest& request,
                         v1::InterruptResponse* response);

  v1::GetStatsResponse GetStats() const;
  // This replica's advertised address, reported by GetStats. Set once the
  // port is known (it may be picked at listen time).
  void SetReplica(std::string replica) ABSL_LOCKS_EXCLUDED(replica_mu_);

  // Unbinds sessions idle past their timeout.
  void ReapExpiredSessions();
  // The pool lost a checked-out worker: its session is gone.
  void OnWorkerLost(WorkerId worker, const std::string& reason);

 private:
  // Runs `request` on the session's worker (or a pooled one) and hands the
  // worker's response to `fill`.
  // With `events`, the call is streamed (see ContextPool::Submit).
  CallId Run(absl::string_view principal, const std::string& session,
             internal::WorkerRequest request,
             absl::Time deadline,
             std::function<void(internal::WorkerResponse&)> fill, RpcDone done,
             CallEvent events = nullptr);

  const CoreOptions options_;
  SessionTable* const sessions_;
  ContextPool* const pool_;
  mutable absl::Mutex replica_mu_;
  std::string replica_ ABSL_GUARDED_BY(replica_mu_);
};

// A short, loggable prefix of a session token (never log whole tokens).
std::string TokenForLog(absl::string_view token);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PYEXEC_CORE_H_
