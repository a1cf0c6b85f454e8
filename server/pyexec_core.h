#ifndef PYEXEC_SERVER_PYEXEC_CORE_H_
#define PYEXEC_SERVER_PYEXEC_CORE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "context_pool/context_pool.h"
#include "pyexec/v1/pyexec.pb.h"
#include "server/callback_registry.h"
#include "server/named_calls.h"
#include "server/session_table.h"
#include "server/snapshot_seal.h"

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
  // How long a leased session outlives the end of its last Attach stream
  // (a client reconnecting inside it keeps the session).
  absl::Duration lease_grace = absl::Seconds(5);
  // Largest snapshot blob (Snapshot, Bind{restore}).
  uint64_t max_snapshot_bytes = 48 << 20;
};

// Who makes a call, and what the client said about it in its metadata.
struct Caller {
  // Implicit: a call with nothing but a principal is the common case.
  Caller(std::string principal = "") : principal(std::move(principal)) {}  // NOLINT
  Caller(const char* principal) : principal(principal) {}                   // NOLINT
  // The authenticated principal ("" when authentication is off).
  std::string principal;
  // x-pyexec-call-id: the name an Interrupt may give this call.
  std::string call_id;
  // x-pyexec-callback: the client makes this call while it runs that
  // callback, so the call runs nested on the waiting interpreter.
  std::string callback;
  // x-pyexec-trace: where the worker and the pool stamp the call's stages
  // (owned by the RPC; null when the client did not ask).
  internal::CallTrace* trace = nullptr;
  // The migrator's own snapshot of a session it is moving (never set from a
  // client's metadata).
  bool moving_call = false;
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

// One lease on a session (Attach). Releasing it (or destroying it) ends the
// lease. Thread-safe.
class Lease {
 public:
  Lease(PyExecCore* core, std::string session) : core_(core), session_(std::move(session)) {}
  ~Lease() { Release(); }
  void Release();

 private:
  PyExecCore* const core_;
  const std::string session_;
  absl::Mutex mu_;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

// The PyExec API's logic, free of gRPC: validates requests, resolves
// sessions, runs calls on the pool and fills in responses. The gRPC service
// is a thin adapter over it.
//
// Every entry point takes the Caller: the authenticated principal making the
// call ("" when authentication is off), and what its metadata names. A
// session belongs to the principal that bound it; anyone else's use of its
// token is NOT_FOUND.
//
// Thread-safe. `done` callbacks may run on the calling thread (for requests
// answered at once) or on the pool's I/O thread; the response object must
// stay alive until then.
class PyExecCore {
 public:
  // `sessions` and `pool` must outlive the core. Callback ids start with
  // `id_prefix` (the replica's token prefix).
  PyExecCore(const CoreOptions& options, SessionTable* sessions, ContextPool* pool,
             std::string id_prefix = "");

  // RESOURCE_EXHAUSTED past max_sessions_per_principal. The returned handle
  // lets the RPC say that its client went away (cancelled, disconnected,
  // deadline), so that the session is not created, or is unbound at once,
  // instead of idling for its timeout.
  //
  // With request.restore, the new worker loads the snapshot before the
  // session exists; `keep_token` (a session moved here from a draining
  // peer) registers it under its old token instead of a new one.
  std::shared_ptr<BindHandle> Bind(absl::string_view principal,
                                   const v1::BindRequest& request,
                                   absl::Time deadline,
                                   v1::BindResponse* response, RpcDone done,
                                   std::string keep_token = "");
  // Always OK: unknown, expired and other principals' tokens are fine (and
  // left alone).
  absl::Status Unbind(absl::string_view principal,
                      const v1::UnbindRequest& request);

  // Eval/Exec/Call return the pool's CallId, for Cancel (0 if the call was
  // answered at once).
  CallId Eval(const Caller& caller, const v1::EvalRequest& request,
              absl::Time deadline, v1::EvalResponse* response, RpcDone done);
  CallId Exec(const Caller& caller, const v1::ExecRequest& request,
              absl::Time deadline, v1::ExecResponse* response, RpcDone done);
  CallId Call(const Caller& caller, const v1::CallRequest& request,
              absl::Time deadline, v1::CallResponse* response, RpcDone done);
  // The client went away: interrupts the call.
  void Cancel(CallId call) { pool_->Cancel(call); }

  // Exec and Call with their output (and Call's values: each item of an
  // iterable result, else the result) streamed to `sink` as they come.
  CallId ExecStream(const Caller& caller, const v1::ExecRequest& request,
                    absl::Time deadline, StreamSink<v1::ExecEvent> sink,
                    RpcDone done);
  CallId CallStream(const Caller& caller, const v1::CallRequest& request,
                    absl::Time deadline, StreamSink<v1::CallEvent> sink,
                    RpcDone done);
  // A stream event has been written; see StreamSink.
  void EventConsumed(CallId ack) { pool_->EventConsumed(ack); }

  // Run's first message (an Eval, Exec or Call) with callbacks: each
  // callback Python asks for goes to `sink` as a RunEvent carrying a
  // CallbackRequest, to be answered with AnswerCallback; the response is
  // the last event, before `done`. INVALID_ARGUMENT if `request` is not a
  // call.
  CallId RunWithCallbacks(const Caller& caller, const v1::RunRequest& request,
                          absl::Time deadline, StreamSink<v1::RunEvent> sink,
                          RpcDone done);
  // The client's answer to a callback. NOT_FOUND for an unknown id (or one
  // of another principal), or when its call has ended.
  absl::Status AnswerCallback(const Caller& caller, const v1::CallbackResult& result);

  // Drops refs of the session (after any call queued on it).
  // Seals the session's state into a blob (its principal's only).
  CallId Snapshot(const Caller& caller, const v1::SnapshotRequest& request,
                  absl::Time deadline, v1::SnapshotResponse* response, RpcDone done);
  // Seals and opens snapshot blobs. REQUIRES: set before serving Snapshot
  // or Bind{restore}; outlives the core.
  void SetSnapshotSeal(const SnapshotSeal* seal) { seal_ = seal; }
  CallId Release(const Caller& caller, const v1::ReleaseRequest& request,
                 absl::Time deadline, v1::ReleaseResponse* response,
                 RpcDone done);
  // Interrupts a call of the session: the one named by request.call_id (see
  // NamedCalls), else the one running, else the first waiting. NOT_FOUND for
  // an unknown session; OK with interrupted=false when there is none.
  absl::Status Interrupt(const Caller& caller, const v1::InterruptRequest& request,
                         v1::InterruptResponse* response);

  // Takes a lease on the session; `on_end` hears the reason if the session
  // ends while the lease is held (it is not called after Release).
  // NOT_FOUND as for calls.
  absl::StatusOr<std::shared_ptr<Lease>> Attach(const Caller& caller,
                                                const v1::AttachRequest& request,
                                                std::function<void(std::string reason, bool moved)> on_end);
  absl::Duration lease_grace() const { return sessions_->lease_grace(); }

  v1::GetStatsResponse GetStats() const;
  // This replica's advertised address, reported by GetStats. Set once the
  // port is known (it may be picked at listen time).
  // `clients_may_dial`: it is an --advertise_address (replicas run with
  // --peers), which Bind then returns as the session's owner.
  void SetReplica(std::string replica, bool clients_may_dial = false)
      ABSL_LOCKS_EXCLUDED(replica_mu_);
  // Told the token of every session that ends here (unbound, expired, its
  // worker died; not one that moved away), so that routing answers its later
  // calls here instead of at the replica its token names. Set before
  // serving.
  void SetSessionGoneListener(std::function<void(const std::string& token)> listener) {
    gone_listener_ = std::move(listener);
  }

  // Moving sessions off a draining replica (server/migrator.h):
  // Marks the session as moving (new calls on it get UNAVAILABLE) and seals
  // its state once the calls accepted before have run.
  absl::StatusOr<v1::SnapshotResponse> SnapshotForMove(const std::string& token,
                                                       const std::string& owner,
                                                       absl::Time deadline);
  // The session now lives on a peer: it leaves this replica (its worker is
  // released; lease streams end UNAVAILABLE, so clients attach again).
  void MovedOut(const std::string& token, const std::string& owner);
  // The move failed: the session stays, and takes calls again.
  void MoveFailed(const std::string& token) { sessions_->SetMoving(token, false); }

  // Unbinds sessions idle past their timeout, or whose lease ended.
  void ReapExpiredSessions();
  // The pool lost a checked-out worker: its session is gone.
  void OnWorkerLost(WorkerId worker, const std::string& reason);
  // The server stops: every Attach stream hears `reason` and ends OK, so
  // that no lease holder sees its stream cut (CANCELLED) by the shutdown.
  void EndAllLeases(const std::string& reason);

 private:
  friend class Lease;
  // Runs `request` on the session's worker (or a pooled one) and hands the
  // worker's response to `fill`. With `events`, the call's partial
  // responses go there (see ContextPool::Submit).
  CallId Submit(const Caller& caller, const std::string& session,
                internal::WorkerRequest request, absl::Time deadline,
                std::function<void(internal::WorkerResponse&)> fill, RpcDone done,
                CallEvent events = nullptr);
  // A lease ended.
  void ReleaseLease(const std::string& session, Lease* lease);
  // The session ended: its leases hear why, its named calls are forgotten.
  void SessionEnded(const std::string& session, const std::string& reason, bool moved = false);

  // Registers the bound worker as a session and answers the Bind.
  void FinishBind(const std::shared_ptr<BindHandle>& handle, WorkerId worker,
                  absl::Duration idle, const std::string& owner, const std::string& keep_token,
                  v1::BindResponse* response, const RpcDone& done);

  const CoreOptions options_;
  const SnapshotSeal* seal_ = nullptr;
  SessionTable* const sessions_;
  ContextPool* const pool_;
  NamedCalls named_calls_;
  CallbackRegistry callbacks_;
  mutable absl::Mutex replica_mu_;
  std::string replica_ ABSL_GUARDED_BY(replica_mu_);
  std::string owner_address_ ABSL_GUARDED_BY(replica_mu_);
  // Who hears when a leased session ends, by session.
  absl::Mutex leases_mu_;
  std::function<void(const std::string& token)> gone_listener_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<Lease*, std::function<void(std::string, bool)>>>
      lease_watchers_ ABSL_GUARDED_BY(leases_mu_);
};

// A short, loggable prefix of a session token (never log whole tokens).
std::string TokenForLog(absl::string_view token);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PYEXEC_CORE_H_
