#include "server/pyexec_core.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "server/request_validation.h"

namespace pyexec {

namespace {

// Moves a worker's answer into an Eval, Exec or Call response.
template <typename Response>
void MoveResult(internal::WorkerResponse& from, Response* to) {
  if (from.has_error()) {
    to->mutable_error()->Swap(from.mutable_error());
  } else if constexpr (!std::is_same_v<Response, v1::ExecResponse>) {
    to->mutable_value()->Swap(from.mutable_value());
  }
  to->mutable_stdout()->swap(*from.mutable_stdout());
  to->mutable_stderr()->swap(*from.mutable_stderr());
}

// The worker request for a public request: the same message minus the
// session, which the server resolves.
template <typename Request>
internal::WorkerRequest ToWorkerRequest(
    const Request& request, Request* (internal::WorkerRequest::*field)()) {
  internal::WorkerRequest work;
  work.set_fresh_namespace(request.session().empty());
  Request* op = (work.*field)();
  *op = request;
  op->clear_session();
  return work;
}

// A worker's partial or final response as a stream event.
template <typename Event>
Event ToEvent(internal::WorkerResponse& from) {
  Event event;
  if (from.partial()) {
    if (!from.stdout().empty()) {
      event.set_stdout(std::move(*from.mutable_stdout()));
    } else if (!from.stderr().empty()) {
      event.set_stderr(std::move(*from.mutable_stderr()));
    } else if constexpr (std::is_same_v<Event, v1::CallEvent>) {
      if (from.has_value()) event.mutable_value()->Swap(from.mutable_value());
    }
  } else if (from.has_error()) {
    event.mutable_end()->mutable_error()->Swap(from.mutable_error());
  } else {
    event.mutable_end();
  }
  return event;
}

}  // namespace

std::string TokenForLog(absl::string_view token) {
  return absl::StrCat(token.substr(0, 8), "…");
}

PyExecCore::PyExecCore(const CoreOptions& options, SessionTable* sessions,
                       ContextPool* pool)
    : options_(options), sessions_(sessions), pool_(pool) {}

void BindHandle::Cancel() {
  std::string token;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    token = std::move(token_);
    token_.clear();
  }
  if (token.empty()) return;
  LogInfo(absl::StrCat("bind of session ", TokenForLog(token),
                       " cancelled by the client; unbinding"));
  v1::UnbindRequest unbind;
  unbind.set_session(std::move(token));
  core_->Unbind(principal_, unbind).IgnoreError();
}

std::shared_ptr<BindHandle> PyExecCore::Bind(absl::string_view principal,
                                             const v1::BindRequest& request,
                                             absl::Time deadline,
                                             v1::BindResponse* response,
                                             RpcDone done) {
  auto handle = std::make_shared<BindHandle>(this, principal);
  if (absl::Status room = sessions_->ReserveSlot(
          principal, options_.max_sessions_per_principal);
      !room.ok()) {
    done(room);
    return handle;
  }
  absl::Duration idle = options_.session_idle_timeout;
  if (request.idle_timeout_seconds() > 0) {
    idle = std::min(absl::Seconds(request.idle_timeout_seconds()),
                    options_.max_session_idle_timeout);
  }
  pool_->Acquire(deadline, [this, idle, response, handle,
                            owner = std::string(principal),
                            done = std::move(done)](absl::StatusOr<WorkerId> worker) {
    if (!worker.ok()) {
      sessions_->ReleaseSlot(owner);
      done(worker.status());
      return;
    }
    std::string token;
    {
      absl::MutexLock lock(&handle->mu_);
      if (!handle->cancelled_) {
        token = sessions_->Add(*worker, idle, owner);
        handle->token_ = token;
      }
    }
    sessions_->ReleaseSlot(owner);
    if (token.empty()) {
      pool_->Release(*worker);
      done(absl::CancelledError("the client cancelled the bind"));
      return;
    }
    LogInfo(absl::StrCat("bind session ", TokenForLog(token), " idle_timeout ",
                         absl::FormatDuration(idle)));
    response->set_session(std::move(token));
    response->set_idle_timeout_seconds(
        static_cast<uint32_t>(absl::ToInt64Seconds(idle)));
    done(absl::OkStatus());
  });
  return handle;
}

absl::Status PyExecCore::Unbind(absl::string_view principal,
                                const v1::UnbindRequest& request) {
  std::optional<WorkerId> worker =
      sessions_->Remove(request.session(), principal);
  if (worker.has_value()) {
    LogInfo(absl::StrCat("unbind session ", TokenForLog(request.session())));
    pool_->Release(*worker);
  }
  return absl::OkStatus();
}

CallId PyExecCore::Run(absl::string_view principal, const std::string& session,
                       internal::WorkerRequest request, absl::Time deadline,
                       std::function<void(internal::WorkerResponse&)> fill,
                       RpcDone done, CallEvent events) {
  request.set_max_refs(options_.max_refs_per_session);
  WorkerId worker = 0;
  if (!session.empty()) {
    absl::StatusOr<WorkerId> found = sessions_->BeginCall(session, principal);
    if (!found.ok()) {
      done(found.status());
      return 0;
    }
    worker = *found;
  }
  return pool_->Submit(
      worker, std::move(request), deadline,
      [this, session, worker, fill = std::move(fill), done = std::move(done)](
          absl::StatusOr<internal::WorkerResponse> result) {
        if (!session.empty()) sessions_->EndCall(session);
        if (!session.empty() && result.status().code() == absl::StatusCode::kNotFound) {
          // The pool no longer has the worker: it died between the Bind
          // that granted it and the session's registration, so the
          // worker-lost notice found no session to drop. Drop it now.
          sessions_->RemoveByWorker(worker);
        }
        if (!result.ok()) {
          done(result.status());
        } else if (result->has_failure()) {
          done(absl::Status(
              static_cast<absl::StatusCode>(result->failure().code()),
              result->failure().message()));
        } else {
          fill(*result);
          done(absl::OkStatus());
        }
      },
      principal, std::move(events));
}

CallId PyExecCore::Eval(absl::string_view principal,
                        const v1::EvalRequest& request, absl::Time deadline,
                        v1::EvalResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Run(principal, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_eval),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::Exec(absl::string_view principal,
                        const v1::ExecRequest& request, absl::Time deadline,
                        v1::ExecResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Run(principal, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_exec),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::Call(absl::string_view principal,
                        const v1::CallRequest& request, absl::Time deadline,
                        v1::CallResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Run(principal, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_call),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::ExecStream(absl::string_view principal,
                              const v1::ExecRequest& request,
                              absl::Time deadline,
                              StreamSink<v1::ExecEvent> sink, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  internal::WorkerRequest work =
      ToWorkerRequest(request, &internal::WorkerRequest::mutable_exec);
  work.set_stream(true);
  return Run(
      principal, request.session(), std::move(work), deadline,
      [sink](internal::WorkerResponse& r) {
        sink(ToEvent<v1::ExecEvent>(r), 0);
      },
      std::move(done),
      [sink](CallId id, internal::WorkerResponse event) {
        sink(ToEvent<v1::ExecEvent>(event), id);
      });
}

CallId PyExecCore::CallStream(absl::string_view principal,
                              const v1::CallRequest& request,
                              absl::Time deadline,
                              StreamSink<v1::CallEvent> sink, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  internal::WorkerRequest work =
      ToWorkerRequest(request, &internal::WorkerRequest::mutable_call);
  work.set_stream(true);
  return Run(
      principal, request.session(), std::move(work), deadline,
      [sink](internal::WorkerResponse& r) {
        sink(ToEvent<v1::CallEvent>(r), 0);
      },
      std::move(done),
      [sink](CallId id, internal::WorkerResponse event) {
        sink(ToEvent<v1::CallEvent>(event), id);
      });
}

CallId PyExecCore::Release(absl::string_view principal,
                           const v1::ReleaseRequest& request,
                           absl::Time deadline, v1::ReleaseResponse* response,
                           RpcDone done) {
  if (absl::Status bad = ValidateRequest(request); !bad.ok()) {
    done(bad);
    return 0;
  }
  internal::WorkerRequest work;
  *work.mutable_release() = request;
  work.mutable_release()->clear_session();
  return Run(
      principal, request.session(), std::move(work), deadline,
      [response](internal::WorkerResponse& r) {
        response->set_released(r.released());
      },
      std::move(done));
}

absl::Status PyExecCore::Interrupt(absl::string_view principal,
                                   const v1::InterruptRequest& request,
                                   v1::InterruptResponse* response) {
  absl::StatusOr<WorkerId> worker =
      sessions_->BeginCall(request.session(), principal);
  if (!worker.ok()) return worker.status();
  sessions_->EndCall(request.session());
  absl::StatusOr<bool> interrupted = pool_->InterruptWorker(*worker);
  if (!interrupted.ok()) return interrupted.status();
  response->set_interrupted(*interrupted);
  if (response->interrupted()) {
    LogInfo(absl::StrCat("interrupt session ", TokenForLog(request.session())));
  }
  return absl::OkStatus();
}

v1::GetStatsResponse PyExecCore::GetStats() const {
  PoolStats stats = pool_->GetStats();
  v1::GetStatsResponse response;
  response.set_num_workers(stats.num_workers);
  response.set_available_workers(stats.available_workers);
  response.set_checked_out(stats.checked_out);
  response.set_pending_requests(stats.pending_requests);
  response.set_max_workers(pool_->max_workers());
  response.set_starting_workers(stats.starting_workers);
  response.set_busy_workers(stats.busy_workers);
  response.set_workers_spawned(stats.workers_spawned);
  response.set_workers_died(stats.workers_died);
  response.set_calls_total(stats.calls_total);
  response.set_sessions(static_cast<uint32_t>(sessions_->size()));
  absl::MutexLock lock(&replica_mu_);
  response.set_replica(replica_);
  return response;
}

void PyExecCore::SetReplica(std::string replica) {
  absl::MutexLock lock(&replica_mu_);
  replica_ = std::move(replica);
}

void PyExecCore::ReapExpiredSessions() {
  for (const auto& [token, worker] : sessions_->TakeExpired()) {
    LogInfo(absl::StrCat("session ", TokenForLog(token), " expired (idle)"));
    pool_->Release(worker);
  }
}

void PyExecCore::OnWorkerLost(WorkerId worker, const std::string& reason) {
  if (std::optional<std::string> token = sessions_->RemoveByWorker(worker)) {
    LogWarning(absl::StrCat("session ", TokenForLog(*token), " lost: ", reason));
  }
}

}  // namespace pyexec
