#ifndef PYEXEC_SERVER_RUN_REACTOR_H_
#define PYEXEC_SERVER_RUN_REACTOR_H_

#include <atomic>
#include <deque>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"
#include "grpcpp/support/server_callback.h"
#include "pyexec/v1/pyexec.grpc.pb.h"
#include "server/call_canceller.h"
#include "server/pyexec_core.h"
#include "server/pyexec_service.h"

namespace pyexec {

// One Run: a call whose Python code may call back into the client. The first
// message the client sends is the call; it runs here (PyExecCore::
// RunWithCallbacks), or, on a session another replica owns, on that replica
// through a stream of our own (the forwarded form), with every message
// relayed both ways. Later messages answer callbacks. Events (callback
// requests, then the response) are written one at a time; each written
// callback request is acknowledged to the pool, as stream events are.
//
// Lifetime: deleted once gRPC (OnDone) and the call (its RpcDone, or the
// forwarded stream's end) are through with it.
class RunReactor final : public grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent> {
 public:
  RunReactor(const PyExecService* service, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  class Forwarded;
  struct Pending {
    v1::RunEvent event;
    CallId ack;
  };

  // The first message: routes it, and starts the call here or there.
  void Start();
  // An event for the client, from the core or the forwarded stream.
  void Send(v1::RunEvent event, CallId ack);
  // The call ended (with the client still to be told).
  void End(absl::Status status);
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether this stream asked callback `id` and is still waiting for its
  // answer; forgets it.
  bool TakeAsked(const std::string& id);
  // Reads the next client message, unless the RPC is finished.
  void ReadNext();
  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unref();

  const PyExecService* const service_;
  grpc::CallbackServerContext* const context_;
  const absl::Time received_;
  absl::StatusOr<Caller> caller_;
  CallCanceller canceller_;
  v1::RunRequest in_;  // one read in flight
  bool started_ = false;  // only OnReadDone touches it
  // The forwarded form's stream, owned here; `forwarding_` is what other
  // threads look at.
  std::unique_ptr<Forwarded> forwarded_;

  absl::Mutex mu_;
  Forwarded* forwarding_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // The callbacks asked on this stream and not yet answered (the local
  // form; the owner checks forwarded answers).
  absl::flat_hash_set<std::string> asked_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // The client closed its side (the local form's reads ended).
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // gRPC's OnDone, and the call's end once it started.
  int refs_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_RUN_REACTOR_H_
