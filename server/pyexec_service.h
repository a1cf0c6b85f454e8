#ifndef PYEXEC_SERVER_PYEXEC_SERVICE_H_
#define PYEXEC_SERVER_PYEXEC_SERVICE_H_

#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "pyexec/v1/pyexec.grpc.pb.h"
#include "server/auth.h"
#include "server/forwarder.h"
#include "server/metrics.h"
#include "server/pyexec_core.h"

namespace pyexec {

// The pyexec.v1.PyExec gRPC service on the callback API. Stateless and thin:
// per RPC it authenticates the caller, works out the deadline, calls
// PyExecCore with the caller's principal, wires client cancellation to the
// pool and converts the status. No handler blocks: the reply completes the
// reactor from the pool's thread. Calls on sessions that another replica
// owns go to the Forwarder instead, with the caller's principal; every
// answer is counted in Metrics.
//
// Every RPC of this service, present and future, must start with
// Authenticate: health and reflection are separate services and stay open.
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
  grpc::ServerUnaryReactor* Interrupt(grpc::CallbackServerContext* context,
                                      const v1::InterruptRequest* request,
                                      v1::InterruptResponse* response) override;

 private:
  // Eval/Exec/Call: checks the request, runs it on the pool through `run`,
  // and interrupts it if the client goes away.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* RunOnPool(
      grpc::CallbackServerContext* context, const Request* request,
      Response* response, Rpc rpc,
      CallId (PyExecCore::*run)(absl::string_view, const Request&, absl::Time,
                                Response*, RpcDone),
      Forwarder::StartCall forward);

  // Unbind/Interrupt: checked and routed like RunOnPool, then answered at
  // once by `local` (given the caller's principal) with nothing to wait for.
  template <typename Request>
  grpc::ServerUnaryReactor* AnswerAtOnce(
      grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
      Forwarder::StartCall forward,
      absl::FunctionRef<absl::Status(const std::string& principal)> local);

  // Non-null when the session's owner is another replica: the reactor of
  // the forwarded call (which carries `principal`), or of the NOT_FOUND for
  // an unknown owner.
  grpc::ServerUnaryReactor* RouteElsewhere(grpc::CallbackServerContext* context,
                                           const std::string& session, Rpc rpc,
                                           absl::Time received,
                                           const std::string& principal,
                                           Forwarder::StartCall forward);

  // ExecStream/CallStream: as RunOnPool, with the events written to the
  // client one at a time.
  template <typename Request, typename Event>
  grpc::ServerWriteReactor<Event>* StreamOnPool(
      grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
      CallId (PyExecCore::*run)(absl::string_view, const Request&, absl::Time,
                                StreamSink<Event>, RpcDone),
      StreamStarter<Request, Event> forward);

  // The caller's principal, or UNAUTHENTICATED.
  absl::StatusOr<std::string> Authenticate(
      const grpc::CallbackServerContext& context) const;

  // The call's deadline, or now + default_timeout when it has none, and
  // never later than now + max_timeout.
  absl::Time DeadlineOf(const grpc::CallbackServerContext& context) const;

  PyExecCore* const core_;
  const Authenticator* const auth_;
  const absl::Duration default_timeout_;
  const absl::Duration max_timeout_;
  const Forwarder* const forwarder_;
  Metrics* const metrics_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PYEXEC_SERVICE_H_
