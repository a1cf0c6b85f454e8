#include "server/pyexec_service.h"

#include <chrono>
#include <deque>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "server/call_canceller.h"
#include "server/call_metadata.h"
#include "server/call_trace.h"
#include "server/run_reactor.h"
#include "server/status_util.h"

namespace pyexec {
namespace {

using AsyncStub = v1::PyExec::StubInterface::async_interface;

// Starts a unary call on a peer's stub with `method`, for the Forwarder.
template <typename Request, typename Response>
Forwarder::StartCall ForwardUnary(
    void (AsyncStub::*method)(grpc::ClientContext*, const Request*, Response*,
                              std::function<void(grpc::Status)>),
    const Request* request, Response* response) {
  return [method, request, response](const Peer& peer, grpc::ClientContext* client,
                                     std::function<void(grpc::Status)> done) {
    (peer.stub->async()->*method)(client, request, response, std::move(done));
  };
}

// Starts a server stream on a peer's stub with `method`, for the Forwarder.
template <typename Request, typename Event>
StreamStarter<Request, Event> ForwardStream(
    void (AsyncStub::*method)(grpc::ClientContext*, const Request*,
                              grpc::ClientReadReactor<Event>*)) {
  return [method](v1::PyExec::Stub* stub, grpc::ClientContext* client, const Request* request,
                  grpc::ClientReadReactor<Event>* reactor) {
    (stub->async()->*method)(client, request, reactor);
  };
}

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
//
// Inlineable (as gRPC's own default reactor is): gRPC runs OnDone and
// OnCancel on the thread that completes the call instead of handing them to
// its executor, one thread wake-up less per call. That is safe because
// neither blocks: OnDone deletes, OnCancel takes only the canceller's lock
// and the pool's, and Finish is never called with either held (the pool
// answers after releasing its lock). pyexec_service_test races cancels with
// answers under ASan with lock-cycle detection on.
class PoolCallReactor final : public MeteredReactor {
 public:
  PoolCallReactor(PyExecCore* core, Metrics* metrics, Rpc rpc)
      : MeteredReactor(metrics, rpc), canceller_([core](CallId id) { core->Cancel(id); }) {}

  // The client asked for the call's trace (x-pyexec-trace): the pool and the
  // worker stamp its stages into the returned object, and the answer carries
  // them in trailing metadata. `entered_ns`: when the handler was entered.
  internal::CallTrace* StartTrace(grpc::CallbackServerContext* context, int64_t entered_ns) {
    trace_ = std::make_unique<internal::CallTrace>();
    context_ = context;
    entered_ns_ = entered_ns;
    return trace_.get();
  }

  // Submits through `start`, which returns the pool's CallId. `done` may
  // Finish the call on another thread before `start` returns; touching `this`
  // afterwards is still safe because gRPC runs OnDone only once the method
  // handler, which calls Run, has returned the reactor.
  template <typename Start>
  void Run(Start start) {
    canceller_.Set(start([this](absl::Status status) {
      if (trace_ != nullptr) {
        context_->AddTrailingMetadata(kTraceHeader,
                                      TraceText(*trace_, entered_ns_, MonotonicNanos()));
      }
      Answer(status);
    }));
  }

  void OnCancel() override { canceller_.Cancel(); }
  bool InternalInlineable() override { return true; }

 private:
  CallCanceller canceller_;
  std::unique_ptr<internal::CallTrace> trace_;
  grpc::CallbackServerContext* context_ = nullptr;
  int64_t entered_ns_ = 0;
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
      : core_(core),
        metrics_(metrics),
        rpc_(rpc),
        received_(absl::Now()),
        canceller_([core](CallId id) { core->Cancel(id); }) {}

  // As PoolCallReactor::Run; `start` gets the sink and the RpcDone.
  template <typename Start>
  void Run(Start start) {
    canceller_.Set(start([this](Event event, CallId ack) { OnEvent(std::move(event), ack); },
                         [this](absl::Status status) { OnEnd(std::move(status)); }));
  }

  void OnWriteDone(bool ok) override {
    CallId ack;
    bool broken = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      ack = queue_.front().ack;
      queue_.pop_front();
      if (!ok) {
        // The stream is broken (client gone): stop, interrupt the call.
        broken = true;
        FinishLocked(absl::CancelledError("the stream to the client broke"));
      } else {
        PumpLocked();
      }
    }
    // Without our lock: the pool may deliver the next event right here.
    if (ack != 0) core_->EventConsumed(ack);
    if (broken) canceller_.Cancel();
  }

  void OnCancel() override { canceller_.Cancel(); }
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

  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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
  CallCanceller canceller_;
  absl::Mutex mu_;
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

// A lease held by an open Attach stream: the first event says it is held;
// if the session ends while it is, the last event says why and the stream
// ends OK. The client's cancel (or death, or lost connection) ends the
// lease.
class AttachReactor final : public grpc::ServerWriteReactor<v1::AttachEvent> {
 public:
  explicit AttachReactor(Metrics* metrics)
      : metrics_(metrics), received_(absl::Now()), link_(std::make_shared<Link>(this)) {}

  void Start(PyExecCore* core, const Caller& caller, const v1::AttachRequest& request) {
    // The core calls back when the session ends, from any thread, maybe
    // while gRPC is done with this reactor: through a link that OnDone cuts.
    absl::StatusOr<std::shared_ptr<Lease>> lease =
        core->Attach(caller, request, [link = link_](std::string reason, bool moved) {
          absl::MutexLock lock(&link->mu);
          if (link->reactor != nullptr) link->reactor->Ended(std::move(reason), moved);
        });
    std::shared_ptr<Lease> to_release;
    {
      absl::MutexLock lock(&mu_);
      if (!lease.ok()) {
        FinishLocked(lease.status());
        return;
      }
      lease_ = *std::move(lease);
      queue_.emplace_back().mutable_attached()->set_grace_seconds(
          static_cast<uint32_t>(absl::ToInt64Seconds(core->lease_grace())));
      PumpLocked();
      // The client may have gone before the lease existed.
      if (cancelled_) to_release = std::move(lease_);
    }
    if (to_release != nullptr) to_release->Release();
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Lease> to_release;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      queue_.pop_front();
      if (ok) {
        PumpLocked();
        return;
      }
      to_release = std::move(lease_);
      FinishLocked(absl::CancelledError("the stream to the client broke"));
    }
    if (to_release != nullptr) to_release->Release();
  }

  void OnCancel() override {
    std::shared_ptr<Lease> to_release;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      to_release = std::move(lease_);
      FinishLocked(absl::CancelledError("the client ended the lease"));
    }
    if (to_release != nullptr) to_release->Release();
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = nullptr;
    }
    std::shared_ptr<Lease> to_release;
    {
      absl::MutexLock lock(&mu_);
      to_release = std::move(lease_);
    }
    if (to_release != nullptr) to_release->Release();
    delete this;
  }

 private:
  struct Link {
    explicit Link(AttachReactor* r) : reactor(r) {}
    absl::Mutex mu;
    AttachReactor* reactor ABSL_GUARDED_BY(mu);
  };

  // The session ended while leased, or (`moved`) left for another replica:
  // the stream then ends UNAVAILABLE, so that the client attaches again and
  // finds it there.
  void Ended(std::string reason, bool moved) {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    lease_.reset();  // nothing left to release: the session is gone from here
    if (moved) {
      FinishLocked(absl::UnavailableError(reason));
      return;
    }
    queue_.emplace_back().mutable_ended()->set_reason(std::move(reason));
    ending_ = true;
    PumpLocked();
  }

  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
    } else if (ending_) {
      FinishLocked(absl::OkStatus());
    }
  }

  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    grpc::Status reply = ToGrpcStatus(status);
    if (metrics_ != nullptr) {
      metrics_->RecordCall(Rpc::kAttach, reply.error_code(), absl::Now() - received_);
    }
    Finish(reply);
  }

  Metrics* const metrics_;
  const absl::Time received_;
  const std::shared_ptr<Link> link_;
  absl::Mutex mu_;
  std::shared_ptr<Lease> lease_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::AttachEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
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

grpc::ServerUnaryReactor* Finished(const absl::Status& status, Metrics* metrics, Rpc rpc) {
  auto* reactor = new MeteredReactor(metrics, rpc);
  reactor->Answer(status);
  return reactor;
}

// The value of metadata `key` if present: printable ASCII, at most
// kMaxCallMetadataBytes. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> CallMetadata(const grpc::CallbackServerContext& context,
                                         const char* key) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::string();
  std::string value(it->second.data(), it->second.size());
  if (value.size() > kMaxCallMetadataBytes ||
      !std::all_of(value.begin(), value.end(),
                   [](char c) { return absl::ascii_isgraph(static_cast<unsigned char>(c)); })) {
    return absl::InvalidArgumentError(absl::StrCat(
        key, " must be printable ASCII of at most ", kMaxCallMetadataBytes, " characters"));
  }
  return value;
}

}  // namespace

absl::StatusOr<Caller> PyExecService::CallerOf(const grpc::CallbackServerContext& context) const {
  absl::StatusOr<std::string> principal = auth_->Authenticate(AuthRequestFrom(context));
  if (!principal.ok()) return principal.status();
  Caller caller(*principal);
  absl::StatusOr<std::string> call_id = CallMetadata(context, kCallIdHeader);
  if (!call_id.ok()) return call_id.status();
  absl::StatusOr<std::string> callback = CallMetadata(context, kCallbackHeader);
  if (!callback.ok()) return callback.status();
  caller.call_id = *std::move(call_id);
  caller.callback = *std::move(callback);
  return caller;
}

absl::StatusOr<std::shared_ptr<const Peer>> PyExecService::Route(
    grpc::CallbackServerContext* context, const std::string& session, const Caller& caller,
    Rpc rpc) const {
  if (forwarder_ == nullptr) return nullptr;
  return forwarder_->Route(context, session.empty() ? caller.callback : session, rpc);
}

absl::Time PyExecService::DeadlineOf(const grpc::CallbackServerContext& context) const {
  const absl::Time now = absl::Now();
  absl::Time deadline = now + std::min(default_timeout_, max_timeout_);
  std::chrono::system_clock::time_point asked = context.deadline();
  if (asked != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(absl::FromChrono(asked), now + max_timeout_);
  }
  return deadline;
}

grpc::ServerUnaryReactor* PyExecService::Bind(grpc::CallbackServerContext* context,
                                              const v1::BindRequest* request,
                                              v1::BindResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return Finished(caller.status(), metrics_, Rpc::kBind);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, Rpc::kBind);
  }
  // A session moved here by a draining peer keeps its token.
  std::string keep_token;
  if (IsForwarded(*context)) {
    absl::StatusOr<std::string> moved = CallMetadata(*context, kMovedTokenHeader);
    if (!moved.ok()) return Finished(moved.status(), metrics_, Rpc::kBind);
    keep_token = *std::move(moved);
  }
  auto* reactor = new BindReactor(metrics_, Rpc::kBind);
  reactor->Start(core_->Bind(caller->principal, *request, DeadlineOf(*context), response,
                             [reactor](absl::Status status) { reactor->Answer(status); },
                             std::move(keep_token)));
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Unbind(grpc::CallbackServerContext* context,
                                                const v1::UnbindRequest* request,
                                                v1::UnbindResponse* response) {
  return AnswerAtOnce(context, request, Rpc::kUnbind,
                      ForwardUnary(&AsyncStub::Unbind, request, response),
                      [&](const Caller& caller) {
                        return core_->Unbind(caller.principal, *request);
                      });
}

template <typename Request>
grpc::ServerUnaryReactor* PyExecService::AnswerAtOnce(
    grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
    Forwarder::StartCall forward, absl::FunctionRef<absl::Status(const Caller& caller)> local) {
  const absl::Time received = absl::Now();
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return Finished(caller.status(), metrics_, rpc);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, rpc);
  }
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      Route(context, request->session(), *caller, rpc);
  if (!owner.ok()) return Finished(owner.status(), metrics_, rpc);
  if (*owner != nullptr) {
    return forwarder_->Forward(context, std::move(*owner), rpc, received, std::move(forward),
                               caller->principal);
  }
  return Finished(local(*caller), metrics_, rpc);
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* PyExecService::RunOnPool(
    grpc::CallbackServerContext* context, const Request* request, Response* response, Rpc rpc,
    CallId (PyExecCore::*run)(const Caller&, const Request&, absl::Time, Response*, RpcDone),
    Forwarder::StartCall forward) {
  const absl::Time received = absl::Now();
  const bool traced = context->client_metadata().count(kTraceHeader) > 0;
  const int64_t entered_ns = traced ? MonotonicNanos() : 0;
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return Finished(caller.status(), metrics_, rpc);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return Finished(bad, metrics_, rpc);
  }
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      Route(context, request->session(), *caller, rpc);
  if (!owner.ok()) return Finished(owner.status(), metrics_, rpc);
  if (*owner != nullptr) {
    return forwarder_->Forward(context, std::move(*owner), rpc, received, std::move(forward),
                               caller->principal);
  }
  auto* reactor = new PoolCallReactor(core_, metrics_, rpc);
  if (traced) caller->trace = reactor->StartTrace(context, entered_ns);
  reactor->Run([&](RpcDone done) {
    return (core_->*run)(*caller, *request, DeadlineOf(*context), response, std::move(done));
  });
  return reactor;
}

grpc::ServerUnaryReactor* PyExecService::Eval(grpc::CallbackServerContext* context,
                                              const v1::EvalRequest* request,
                                              v1::EvalResponse* response) {
  return RunOnPool(context, request, response, Rpc::kEval, &PyExecCore::Eval,
                   ForwardUnary(&AsyncStub::Eval, request, response));
}

grpc::ServerUnaryReactor* PyExecService::Exec(grpc::CallbackServerContext* context,
                                              const v1::ExecRequest* request,
                                              v1::ExecResponse* response) {
  return RunOnPool(context, request, response, Rpc::kExec, &PyExecCore::Exec,
                   ForwardUnary(&AsyncStub::Exec, request, response));
}

grpc::ServerUnaryReactor* PyExecService::Call(grpc::CallbackServerContext* context,
                                              const v1::CallRequest* request,
                                              v1::CallResponse* response) {
  return RunOnPool(context, request, response, Rpc::kCall, &PyExecCore::Call,
                   ForwardUnary(&AsyncStub::Call, request, response));
}

grpc::ServerUnaryReactor* PyExecService::Snapshot(grpc::CallbackServerContext* context,
                                                  const v1::SnapshotRequest* request,
                                                  v1::SnapshotResponse* response) {
  return RunOnPool(context, request, response, Rpc::kSnapshot, &PyExecCore::Snapshot,
                   ForwardUnary(&AsyncStub::Snapshot, request, response));
}

grpc::ServerUnaryReactor* PyExecService::Release(grpc::CallbackServerContext* context,
                                                 const v1::ReleaseRequest* request,
                                                 v1::ReleaseResponse* response) {
  return RunOnPool(context, request, response, Rpc::kRelease, &PyExecCore::Release,
                   ForwardUnary(&AsyncStub::Release, request, response));
}

template <typename Request, typename Event>
grpc::ServerWriteReactor<Event>* PyExecService::StreamOnPool(
    grpc::CallbackServerContext* context, const Request* request, Rpc rpc,
    CallId (PyExecCore::*run)(const Caller&, const Request&, absl::Time, StreamSink<Event>,
                              RpcDone),
    StreamStarter<Request, Event> forward) {
  const absl::Time received = absl::Now();
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return new FinishedStream<Event>(caller.status(), metrics_, rpc);
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return new FinishedStream<Event>(bad, metrics_, rpc);
  }
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      Route(context, request->session(), *caller, rpc);
  if (!owner.ok()) return new FinishedStream<Event>(owner.status(), metrics_, rpc);
  if (*owner != nullptr) {
    return forwarder_->ForwardStream<Request, Event>(context, std::move(*owner), rpc, received,
                                                     request, std::move(forward),
                                                     caller->principal);
  }
  auto* reactor = new PoolStreamReactor<Event>(core_, metrics_, rpc);
  reactor->Run([&](StreamSink<Event> sink, RpcDone done) -> CallId {
    return (core_->*run)(*caller, *request, DeadlineOf(*context), std::move(sink),
                         std::move(done));
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::ExecEvent>* PyExecService::ExecStream(
    grpc::CallbackServerContext* context, const v1::ExecRequest* request) {
  return StreamOnPool<v1::ExecRequest, v1::ExecEvent>(context, request, Rpc::kExecStream,
                                                      &PyExecCore::ExecStream,
                                                      ForwardStream(&AsyncStub::ExecStream));
}

grpc::ServerWriteReactor<v1::CallEvent>* PyExecService::CallStream(
    grpc::CallbackServerContext* context, const v1::CallRequest* request) {
  return StreamOnPool<v1::CallRequest, v1::CallEvent>(context, request, Rpc::kCallStream,
                                                      &PyExecCore::CallStream,
                                                      ForwardStream(&AsyncStub::CallStream));
}

grpc::ServerUnaryReactor* PyExecService::Interrupt(grpc::CallbackServerContext* context,
                                                   const v1::InterruptRequest* request,
                                                   v1::InterruptResponse* response) {
  return AnswerAtOnce(context, request, Rpc::kInterrupt,
                      ForwardUnary(&AsyncStub::Interrupt, request, response),
                      [&](const Caller& caller) {
                        return core_->Interrupt(caller, *request, response);
                      });
}

grpc::ServerWriteReactor<v1::AttachEvent>* PyExecService::Attach(
    grpc::CallbackServerContext* context, const v1::AttachRequest* request) {
  const absl::Time received = absl::Now();
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) {
    return new FinishedStream<v1::AttachEvent>(caller.status(), metrics_, Rpc::kAttach);
  }
  if (absl::Status bad = v1::MalformedRequestError(*request); !bad.ok()) {
    return new FinishedStream<v1::AttachEvent>(bad, metrics_, Rpc::kAttach);
  }
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      Route(context, request->session(), *caller, Rpc::kAttach);
  if (!owner.ok()) {
    return new FinishedStream<v1::AttachEvent>(owner.status(), metrics_, Rpc::kAttach);
  }
  if (*owner != nullptr) {
    return forwarder_->ForwardStream<v1::AttachRequest, v1::AttachEvent>(
        context, std::move(*owner), Rpc::kAttach, received, request,
        ForwardStream(&AsyncStub::Attach), caller->principal);
  }
  auto* reactor = new AttachReactor(metrics_);
  reactor->Start(core_, *caller, *request);
  return reactor;
}

grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent>* PyExecService::Run(
    grpc::CallbackServerContext* context) {
  return new RunReactor(this, context);
}

grpc::ServerUnaryReactor* PyExecService::GetStats(grpc::CallbackServerContext* context,
                                                  const v1::GetStatsRequest* /*request*/,
                                                  v1::GetStatsResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return Finished(caller.status(), metrics_, Rpc::kGetStats);
  *response = core_->GetStats();
  return Finished(absl::OkStatus(), metrics_, Rpc::kGetStats);
}

}  // namespace pyexec
