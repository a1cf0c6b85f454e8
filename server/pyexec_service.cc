#include "server/pyexec_service.h"

#include <chrono>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/status_util.h"

namespace pyexec {
namespace {

// A unary reactor whose call runs on the pool. OnCancel (client cancelled or
// disconnected, or the deadline passed) interrupts the Python code; the pool
// then answers and Finish runs as usual.
class PoolCallReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit PoolCallReactor(PyExecCore* core) : core_(core) {}

  // Submits through `start`, which returns the pool's CallId. `done` may
  // Finish the call on another thread before `start` returns; touching `this`
  // afterwards is still safe because gRPC runs OnDone only once the method
  // handler, which calls Run, has returned the reactor.
  template <typename Start>
  void Run(Start start) {
    CallId id = start([this](absl::Status status) { Finish(ToGrpcStatus(status)); });
    absl::MutexLock lock(&mu_);
    call_ = id;
    // OnCancel may have run before we knew the id.
    if (cancelled_ && call_ != 0) core_->Cancel(call_);
  }

  void OnCancel() override {
    CallId id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = call_;
    }
    if (id != 0) core_->Cancel(id);
  }

  void OnDone() override { delete this; }

 private:
  PyExecCore* const core_;
  absl::Mutex mu_;
  CallId call_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A Bind: OnCancel (client cancelled or disconnected, or the deadline
// passed) tells the core, so that no session outlives its client's
// interest.
class BindReactor final : public grpc::ServerUnaryReactor {
 public:
  void Start(std::shared_ptr<BindHandle> handle) {
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      handle_ = handle;
      cancelled = cancelled_;
    }
    // OnCancel may have run before we had the handle.
    if (cancelled) handle->Cancel();
  }

  void OnCancel() override {
    std::shared_ptr<BindHandle> handle;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      handle = handle_;
    }
    if (handle != nullptr) handle->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  absl::Mutex mu_;
  std::shared_ptr<BindHandle> handle_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A reactor for RPCs answered without the pool.
class SimpleReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* Finished(const absl::Status& status) {
  auto* reactor = new SimpleReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::Time PyExecService::DeadlineOf(
    const grpc::CallbackServerContext& context) const {
  absl::Time fallback = absl::Now() + default_timeout_;
  std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return fallback;
  return std::min(absl::FromChrono(deadline), fallback + absl::Hours(24 * 365));
}

grpc::ServerUnaryReactor* PyExecService::Bind(
    grpc::CallbackServerContext* context, const v1::BindRequest* request,
    v1::BindResponse* response) {
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad);
  }
  auto* reactor = new BindReactor();
  reactor->Start(core_->Bind(*request, DeadlineOf(*context), response,
                             [reactor](absl::Status status) {
                               reactor->Finish(ToGrpcStatus(status));
                             }));
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Unbind(
    grpc::CallbackServerContext* /*context*/, const v1::UnbindRequest* request,
    v1::UnbindResponse* /*response*/) {
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad);
  }
  return Finished(core_->Unbind(*request));
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* PyExecService::RunOnPool(
    grpc::CallbackServerContext* context, const Request* request,
    Response* response,
    CallId (PyExecCore::*run)(const Request&, absl::Time, Response*, RpcDone)) {
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad);
  }
  auto* reactor = new PoolCallReactor(core_);
  reactor->Run([&](RpcDone done) {
    return (core_->*run)(*request, DeadlineOf(*context), response,
                         std::move(done));
  });
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Eval(
    grpc::CallbackServerContext* context, const v1::EvalRequest* request,
    v1::EvalResponse* response) {
  return RunOnPool(context, request, response, &PyExecCore::Eval);
}

grpc::ServerUnaryReactor* PyExecService::Exec(
    grpc::CallbackServerContext* context, const v1::ExecRequest* request,
    v1::ExecResponse* response) {
  return RunOnPool(context, request, response, &PyExecCore::Exec);
}

grpc::ServerUnaryReactor* PyExecService::Call(
    grpc::CallbackServerContext* context, const v1::CallRequest* request,
    v1::CallResponse* response) {
  return RunOnPool(context, request, response, &PyExecCore::Call);
}

grpc::ServerUnaryReactor* PyExecService::GetStats(
    grpc::CallbackServerContext* /*context*/,
    const v1::GetStatsRequest* /*request*/, v1::GetStatsResponse* response) {
  *response = core_->GetStats();
  return Finished(absl::OkStatus());
}

}  // namespace pyexec
