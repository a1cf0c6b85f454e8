#ifndef PYEXEC_SERVER_PYEXEC_SERVICE_H_
#define PYEXEC_SERVER_PYEXEC_SERVICE_H_

#include "absl/time/time.h"
#include "pyexec/v1/pyexec.grpc.pb.h"
#include "server/auth.h"
#include "server/forwarder.h"
#include "server/metrics.h"
#include "server/pyexec_core.h"

namespace pyexec {

// The pyexec.v1.PyExec gRPC service on the callback API. Stateless and thin:
// per RPC it authenticates the caller, reads what its metadata says about the
// call (CallerOf), works out the deadline, routes calls on sessions that
// another replica owns to the Forwarder, calls PyExecCore otherwise, wires
// client cancellation to the pool and converts the status. No handler
// blocks: the reply completes the reactor from the pool's thread. Every
// answer is counted in Metrics.
//
// Every RPC of this service, present and future, must start with CallerOf
// (which authenticates): health and reflection are separate services and
// stay open.
class PyExecService final : public v1::PyExec::CallbackService {
 public:
  // `core` and `auth` must outlive the service, and so must `forwarder` and
  // `metrics` when given (null: run alone, count nothing). Calls without a
  // deadline get `default_timeout`; no call runs longer than `max_timeout`.
  PyExecService(PyExecCore* core, const Authenticator* auth,
                absl::Duration default_timeout, absl::Duration max_timeout,
                const Forwarder* forwarder = nullptr, Metrics* metrics = nullptr)
      : core_(core),
        auth_(auth),
        default_timeout_(default_timeout),
        max_timeout_(max_timeout),
        forwarder_(forwarder),
        metrics_(metrics) {}

  grpc::ServerUnaryReactor* Bind(grpc::CallbackServerContext* context,
                                 const v1::BindRequest* request,
                                 v1::BindResponse* response) override;
  grpc::ServerUnaryReactor* Unbind(grpc::CallbackServerContext* context,
                                   const v1::UnbindRequest* request,
                                   v1::UnbindResponse* response) override;
  grpc::ServerUnaryReactor* Eval(grpc::CallbackServerContext* context,
                                 const v1::EvalRequest* request,
                                 v1::EvalResponse* response) override;
  grpc::ServerUnaryReactor* Exec(grpc::CallbackServerContext* context,
                                 const v1::ExecRequest* request,
                                 v1::ExecResponse* response) override;
  grpc::ServerUnaryReactor* Call(grpc::CallbackServerContext* context,
                                 const v1::CallRequest* request,
                                 v1::CallResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerWriteReactor<v1::ExecEvent>* ExecStream(
      grpc::CallbackServerContext* context,
      const v1::ExecRequest* request) override;
  grpc::ServerWriteReactor<v1::CallEvent>* CallStream(
      grpc::CallbackServerContext* context,
      const v1::CallRequest* request) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const v1::SnapshotRequest* request,
                                     v1::SnapshotResponse* response) override;
  grpc::ServerUnaryReactor* Interrupt(grpc::CallbackServerContext* context,
                                      const v1::InterruptRequest* request,
                                      v1::InterruptResponse* response) override;
  grpc::ServerWriteReactor<v1::AttachEvent>* Attach(
      grpc::CallbackServerContext* context, const v1::AttachRequest* request) override;
  grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent>* Run(
      grpc::CallbackServerContext* context) override;

  // The authenticated caller and what its metadata names (x-pyexec-call-id,
  // x-pyexec-callback): UNAUTHENTICATED, or INVALID_ARGUMENT for a malformed
  // name.
  absl::StatusOr<Caller> CallerOf(const grpc::CallbackServerContext& context) const;

  // Where a call runs: null here, a peer to forward to, or NOT_FOUND (see
  // Forwarder::Route). A call on a session goes to the session's owner; a
  // stateless call made from a callback goes to the callback's replica.
  absl::StatusOr<std::shared_ptr<const Peer>> Route(grpc::CallbackServerContext* context,
                                                    const std::string& session,
                                                    const Caller& caller, Rpc rpc) const;

  // The call's deadline, or now + default_timeout when it has none, and
  // never later than now + max_timeout.
  absl::Time DeadlineOf(const grpc::CallbackServerContext& context) const;

  PyExecCore* core() const { return core_; }
  const Forwarder* forwarder() const { return forwarder_; }
  Metrics* metrics() const { return metrics_; }

 private:
  // Eval/Exec/Call/Release: checks the request, routes it, runs it on the
  // pool through `run`, and interrupts it if the client goes away.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* RunOnPool(
      grpc::CallbackServerContext* context, const Request* request,
      Response* response, Rpc rpc,
      CallId (PyExecCore::*run)(const Caller&, const Request&, absl::Time,
                                Response*, RpcDone),
      Forwarder::StartCall forward);

  // Unbind/Interrupt: checked and routed like RunOnPool, then answered at
  // once by `local` with nothing to wait for.
  template <typename Request>
  grpc::ServerUnaryReactor* AnswerAtOnce(
      grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
      Forwarder::StartCall forward,
      absl::FunctionRef<absl::Status(const Caller& caller)> local);

  // ExecStream/CallStream: as RunOnPool, with the events written to the
  // client one at a time.
  template <typename Request, typename Event>
  grpc::ServerWriteReactor<Event>* StreamOnPool(
      grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
      CallId (PyExecCore::*run)(const Caller&, const Request&, absl::Time,
                                StreamSink<Event>, RpcDone),
      StreamStarter<Request, Event> forward);

  PyExecCore* const core_;
  const Authenticator* const auth_;
  const absl::Duration default_timeout_;
  const absl::Duration max_timeout_;
  const Forwarder* const forwarder_;
  Metrics* const metrics_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PYEXEC_SERVICE_H_
