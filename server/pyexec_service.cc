#include "server/pyexec_service.h"

#include <chrono>
#include <deque>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/status_util.h"

namespace pyexec {
namespace {

// A unary reactor that counts its answer (RPC, code, latency) in Metrics.
class MeteredReactor : public grpc::ServerUnaryReactor {
 public:
  MeteredReactor(Metrics* metrics, Rpc rpc)
      : metrics_(metrics), rpc_(rpc), received_(absl::Now()) {}

  // Counts and finishes the call; `this` may be gone afterwards.
  void Answer(const absl::Status& status) {
    grpc::Status reply = ToGrpcStatus(status);
    if (metrics_ != nullptr) {
      metrics_->RecordCall(rpc_, reply.error_code(), absl::Now() - received_);
    }
    Finish(reply);
  }

  void OnDone() override { delete this; }

 private:
  Metrics* const metrics_;
  const Rpc rpc_;
  const absl::Time received_;
};

// A unary reactor whose call runs on the pool. OnCancel (client cancelled or
// disconnected, or the deadline passed) interrupts the Python code; the pool
// then answers and Finish runs as usual.
class PoolCallReactor final : public MeteredReactor {
 public:
  PoolCallReactor(PyExecCore* core, Metrics* metrics, Rpc rpc)
      : MeteredReactor(metrics, rpc), core_(core) {}

  // Submits through `start`, which returns the pool's CallId. `done` may
  // Finish the call on another thread before `start` returns; touching `this`
  // afterwards is still safe because gRPC runs OnDone only once the method
  // handler, which calls Run, has returned the reactor.
  template <typename Start>
  void Run(Start start) {
    CallId id = start([this](absl::Status status) { Answer(status); });
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

 private:
  PyExecCore* const core_;
  absl::Mutex mu_;
  CallId call_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A server stream whose call runs on the pool. Events from the pool are
// queued and written one at a time (gRPC allows one outstanding write); each
// written event is acknowledged to the pool, which stops reading the worker
// while too many are unacknowledged, so this queue stays short. OnCancel
// (client cancelled or gone, deadline) interrupts the Python code.
//
// Lifetime: the reactor is deleted once both gRPC (OnDone) and the pool (the
// RpcDone) are through with it, since pool events may still arrive after a
// broken stream was finished.
template <typename Event>
class PoolStreamReactor final : public grpc::ServerWriteReactor<Event> {
 public:
  PoolStreamReactor(PyExecCore* core, Metrics* metrics, Rpc rpc)
      : core_(core), metrics_(metrics), rpc_(rpc), received_(absl::Now()) {}

  // As PoolCallReactor::Run; `start` gets the sink and the RpcDone.
  template <typename Start>
  void Run(Start start) {
    CallId id = start(
        [this](Event event, CallId ack) { OnEvent(std::move(event), ack); },
        [this](absl::Status status) { OnEnd(std::move(status)); });
    absl::MutexLock lock(&mu_);
    call_ = id;
    if (cancelled_ && call_ != 0) core_->Cancel(call_);
  }

  void OnWriteDone(bool ok) override {
    CallId ack;
    CallId cancel = 0;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      ack = queue_.front().ack;
      queue_.pop_front();
      if (!ok) {
        // The stream is broken (client gone): stop, interrupt the call.
        cancel = call_;
        FinishLocked(absl::CancelledError("the stream to the client broke"));
      } else {
        PumpLocked();
      }
    }
    // Without our lock: the pool may deliver the next event right here.
    if (ack != 0) core_->EventConsumed(ack);
    if (cancel != 0) core_->Cancel(cancel);
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

  void OnDone() override { Unref(); }

 private:
  struct Pending {
    Event event;
    CallId ack;
  };

  void OnEvent(Event event, CallId ack) {
    {
      absl::MutexLock lock(&mu_);
      if (!finished_) {
        queue_.push_back({std::move(event), ack});
        PumpLocked();
        return;
      }
    }
    if (ack != 0) core_->EventConsumed(ack);  // nobody will write it
  }

  void OnEnd(absl::Status status) {
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      end_status_ = std::move(status);
      PumpLocked();
    }
    Unref();
  }

  // Starts the next write, or finishes once everything is written.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      writing_ = true;
      // A deque keeps the element's address while others are appended.
      this->StartWrite(&queue_.front().event);
    } else if (ended_) {
      FinishLocked(end_status_);
    }
  }

  void FinishLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    grpc::Status reply = ToGrpcStatus(status);
    if (metrics_ != nullptr) {
      metrics_->RecordCall(rpc_, reply.error_code(), absl::Now() - received_);
    }
    this->Finish(reply);
  }

  void Unref() {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  PyExecCore* const core_;
  Metrics* const metrics_;
  const Rpc rpc_;
  const absl::Time received_;
  absl::Mutex mu_;
  CallId call_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int refs_ ABSL_GUARDED_BY(mu_) = 2;  // gRPC's OnDone and the pool's RpcDone
};

// A server stream answered at once with a status (malformed request, or a
// session owned by a replica that is gone).
template <typename Event>
class FinishedStream final : public grpc::ServerWriteReactor<Event> {
 public:
  FinishedStream(const absl::Status& status, Metrics* metrics, Rpc rpc) {
    grpc::Status reply = ToGrpcStatus(status);
    if (metrics != nullptr) metrics->RecordCall(rpc, reply.error_code(), absl::ZeroDuration());
    this->Finish(reply);
  }
  void OnDone() override { delete this; }
};

// A Bind: OnCancel (client cancelled or disconnected, or the deadline
// passed) tells the core, so that no session outlives its client's
// interest.
class BindReactor final : public MeteredReactor {
 public:
  BindReactor(Metrics* metrics, Rpc rpc) : MeteredReactor(metrics, rpc) {}

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

 private:
  absl::Mutex mu_;
  std::shared_ptr<BindHandle> handle_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerUnaryReactor* Finished(const absl::Status& status, Metrics* metrics,
                                   Rpc rpc) {
  auto* reactor = new MeteredReactor(metrics, rpc);
  reactor->Answer(status);
  return reactor;
}

}  // namespace

absl::StatusOr<std::string> PyExecService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  return auth_->Authenticate(AuthRequestFrom(context));
}

absl::Time PyExecService::DeadlineOf(
    const grpc::CallbackServerContext& context) const {
  const absl::Time now = absl::Now();
  absl::Time deadline = now + std::min(default_timeout_, max_timeout_);
  std::chrono::system_clock::time_point asked = context.deadline();
  if (asked != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(absl::FromChrono(asked), now + max_timeout_);
  }
  return deadline;
}

grpc::ServerUnaryReactor* PyExecService::RouteElsewhere(
    grpc::CallbackServerContext* context, const std::string& session, Rpc rpc,
    absl::Time received, const std::string& principal,
    Forwarder::StartCall forward) {
  if (forwarder_ == nullptr) return nullptr;
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      forwarder_->Route(context, session, rpc);
  if (!owner.ok()) return Finished(owner.status(), metrics_, rpc);
  if (*owner == nullptr) return nullptr;
  return forwarder_->Forward(context, std::move(*owner), rpc, received,
                             std::move(forward), principal);
}

grpc::ServerUnaryReactor* PyExecService::Bind(
    grpc::CallbackServerContext* context, const v1::BindRequest* request,
    v1::BindResponse* response) {
  absl::StatusOr<std::string> principal = Authenticate(*context);
  if (!principal.ok()) return Finished(principal.status(), metrics_, Rpc::kBind);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, Rpc::kBind);
  }
  auto* reactor = new BindReactor(metrics_, Rpc::kBind);
  reactor->Start(core_->Bind(*principal, *request, DeadlineOf(*context), response,
                             [reactor](absl::Status status) { reactor->Answer(status); }));
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Unbind(
    grpc::CallbackServerContext* context, const v1::UnbindRequest* request,
    v1::UnbindResponse* response) {
  return AnswerAtOnce(
      context, request, Rpc::kUnbind,
      [request, response](const Peer& peer, grpc::ClientContext* client,
                          std::function<void(grpc::Status)> done) {
        peer.stub->async()->Unbind(client, request, response, std::move(done));
      },
      [&](const std::string& principal) {
        return core_->Unbind(principal, *request);
      });
}

template <typename Request>
grpc::ServerUnaryReactor* PyExecService::AnswerAtOnce(
    grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
    Forwarder::StartCall forward,
    absl::FunctionRef<absl::Status(const std::string& principal)> local) {
  const absl::Time received = absl::Now();
  absl::StatusOr<std::string> principal = Authenticate(*context);
  if (!principal.ok()) return Finished(principal.status(), metrics_, rpc);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, rpc);
  }
  if (grpc::ServerUnaryReactor* elsewhere = RouteElsewhere(
          context, request->session(), rpc, received, *principal,
          std::move(forward))) {
    return elsewhere;
  }
  return Finished(local(*principal), metrics_, rpc);
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* PyExecService::RunOnPool(
    grpc::CallbackServerContext* context, const Request* request,
    Response* response, Rpc rpc,
    CallId (PyExecCore::*run)(absl::string_view, const Request&, absl::Time,
                              Response*, RpcDone),
    Forwarder::StartCall forward) {
  const absl::Time received = absl::Now();
  absl::StatusOr<std::string> principal = Authenticate(*context);
  if (!principal.ok()) return Finished(principal.status(), metrics_, rpc);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, rpc);
  }
  if (grpc::ServerUnaryReactor* elsewhere = RouteElsewhere(
          context, request->session(), rpc, received, *principal,
          std::move(forward))) {
    return elsewhere;
  }
  auto* reactor = new PoolCallReactor(core_, metrics_, rpc);
  reactor->Run([&](RpcDone done) {
    return (core_->*run)(*principal, *request, DeadlineOf(*context), response,
                         std::move(done));
  });
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Eval(
    grpc::CallbackServerContext* context, const v1::EvalRequest* request,
    v1::EvalResponse* response) {
  return RunOnPool(context, request, response, Rpc::kEval, &PyExecCore::Eval,
                   [request, response](const Peer& peer, grpc::ClientContext* client,
                                       std::function<void(grpc::Status)> done) {
                     peer.stub->async()->Eval(client, request, response,
                                              std::move(done));
                   });
}

grpc::ServerUnaryReactor* PyExecService::Exec(
    grpc::CallbackServerContext* context, const v1::ExecRequest* request,
    v1::ExecResponse* response) {
  return RunOnPool(context, request, response, Rpc::kExec, &PyExecCore::Exec,
                   [request, response](const Peer& peer, grpc::ClientContext* client,
                                       std::function<void(grpc::Status)> done) {
                     peer.stub->async()->Exec(client, request, response,
                                              std::move(done));
                   });
}

grpc::ServerUnaryReactor* PyExecService::Call(
    grpc::CallbackServerContext* context, const v1::CallRequest* request,
    v1::CallResponse* response) {
  return RunOnPool(context, request, response, Rpc::kCall, &PyExecCore::Call,
                   [request, response](const Peer& peer, grpc::ClientContext* client,
                                       std::function<void(grpc::Status)> done) {
                     peer.stub->async()->Call(client, request, response,
                                              std::move(done));
                   });
}

template <typename Request, typename Event>
grpc::ServerWriteReactor<Event>* PyExecService::StreamOnPool(
    grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
    CallId (PyExecCore::*run)(absl::string_view, const Request&, absl::Time,
                              StreamSink<Event>, RpcDone),
    StreamStarter<Request, Event> forward) {
  const absl::Time received = absl::Now();
  absl::StatusOr<std::string> principal = Authenticate(*context);
  if (!principal.ok()) {
    return new FinishedStream<Event>(principal.status(), metrics_, rpc);
  }
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return new FinishedStream<Event>(bad, metrics_, rpc);
  }
  if (forwarder_ != nullptr) {
    absl::StatusOr<std::shared_ptr<const Peer>> owner =
        forwarder_->Route(context, request->session(), rpc);
    if (!owner.ok()) return new FinishedStream<Event>(owner.status(), metrics_, rpc);
    if (*owner != nullptr) {
      return forwarder_->ForwardStream<Request, Event>(
          context, std::move(*owner), rpc, received, request, std::move(forward),
          *principal);
    }
  }
  auto* reactor = new PoolStreamReactor<Event>(core_, metrics_, rpc);
  reactor->Run([&](StreamSink<Event> sink, RpcDone done) -> CallId {
    return (core_->*run)(*principal, *request, DeadlineOf(*context),
                         std::move(sink), std::move(done));
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::ExecEvent>* PyExecService::ExecStream(
    grpc::CallbackServerContext* context, const v1::ExecRequest* request) {
  return StreamOnPool<v1::ExecRequest, v1::ExecEvent>(
      context, request, Rpc::kExecStream, &PyExecCore::ExecStream,
      [](v1::PyExec::Stub* stub, grpc::ClientContext* client,
         const v1::ExecRequest* req,
         grpc::ClientReadReactor<v1::ExecEvent>* reactor) {
        stub->async()->ExecStream(client, req, reactor);
      });
}

grpc::ServerWriteReactor<v1::CallEvent>* PyExecService::CallStream(
    grpc::CallbackServerContext* context, const v1::CallRequest* request) {
  return StreamOnPool<v1::CallRequest, v1::CallEvent>(
      context, request, Rpc::kCallStream, &PyExecCore::CallStream,
      [](v1::PyExec::Stub* stub, grpc::ClientContext* client,
         const v1::CallRequest* req,
         grpc::ClientReadReactor<v1::CallEvent>* reactor) {
        stub->async()->CallStream(client, req, reactor);
      });
}

grpc::ServerUnaryReactor* PyExecService::Release(
    grpc::CallbackServerContext* context, const v1::ReleaseRequest* request,
    v1::ReleaseResponse* response) {
  return RunOnPool(context, request, response, Rpc::kRelease,
                   &PyExecCore::Release,
                   [request, response](const Peer& peer, grpc::ClientContext* client,
                                       std::function<void(grpc::Status)> done) {
                     peer.stub->async()->Release(client, request, response,
                                                 std::move(done));
                   });
}

grpc::ServerUnaryReactor* PyExecService::Interrupt(
    grpc::CallbackServerContext* context, const v1::InterruptRequest* request,
    v1::InterruptResponse* response) {
  return AnswerAtOnce(
      context, request, Rpc::kInterrupt,
      [request, response](const Peer& peer, grpc::ClientContext* client,
                          std::function<void(grpc::Status)> done) {
        peer.stub->async()->Interrupt(client, request, response,
                                      std::move(done));
      },
      [&](const std::string& principal) {
        return core_->Interrupt(principal, *request, response);
      });
}

grpc::ServerUnaryReactor* PyExecService::GetStats(
    grpc::CallbackServerContext* context,
    const v1::GetStatsRequest* /*request*/, v1::GetStatsResponse* response) {
  absl::StatusOr<std::string> principal = Authenticate(*context);
  if (!principal.ok()) return Finished(principal.status(), metrics_, Rpc::kGetStats);
  *response = core_->GetStats();
  return Finished(absl::OkStatus(), metrics_, Rpc::kGetStats);
}

}  // namespace pyexec
