#include "server/pyexec_core.h"

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
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
                       ContextPool* pool, std::string id_prefix)
    : options_(options), sessions_(sessions), pool_(pool), callbacks_(std::move(id_prefix)) {}

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
                                             RpcDone done, std::string keep_token) {
  auto handle = std::make_shared<BindHandle>(this, principal);
  // A snapshot to restore is checked before anything is spent on it: its
  // seal, then whose it is.
  std::shared_ptr<internal::SnapshotEnvelope> restore;
  if (!request.restore().empty()) {
    if (request.restore().size() > options_.max_snapshot_bytes + 4096) {
      done(absl::InvalidArgumentError(absl::StrCat(
          "restore: the blob is larger than --max_snapshot_bytes (",
          options_.max_snapshot_bytes, ")")));
      return handle;
    }
    if (seal_ == nullptr) {
      done(absl::FailedPreconditionError("restore: snapshots are not enabled on this server"));
      return handle;
    }
    absl::StatusOr<internal::SnapshotEnvelope> opened = seal_->Open(request.restore(), principal);
    if (!opened.ok()) {
      done(opened.status());
      return handle;
    }
    restore = std::make_shared<internal::SnapshotEnvelope>(*std::move(opened));
  }
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
  pool_->Acquire(deadline, [this, idle, response, handle, deadline, restore,
                            keep_token = std::move(keep_token),
                            owner = std::string(principal),
                            done = std::move(done)](absl::StatusOr<WorkerId> worker) {
    if (!worker.ok()) {
      sessions_->ReleaseSlot(owner);
      done(worker.status());
      return;
    }
    if (restore == nullptr) {
      FinishBind(handle, *worker, idle, owner, keep_token, response, done);
      return;
    }
    // The state goes into the worker before the session exists: nobody
    // can call it half restored.
    internal::WorkerRequest load;
    load.mutable_restore()->set_state(restore->state());
    pool_->Submit(
        *worker, std::move(load), deadline,
        [this, handle, worker = *worker, idle, owner, keep_token, response,
         done](absl::StatusOr<internal::WorkerResponse> loaded) {
          if (loaded.ok() && loaded->has_failure()) {
            loaded = absl::Status(static_cast<absl::StatusCode>(loaded->failure().code()),
                                  absl::StrCat("restore: ", loaded->failure().message()));
          }
          if (!loaded.ok()) {
            sessions_->ReleaseSlot(owner);
            pool_->Release(worker);
            done(loaded.status());
            return;
          }
          *response->mutable_restore_lost() = loaded->restore_lost();
          if (loaded->has_error()) *response->mutable_restore_error() = loaded->error();
          FinishBind(handle, worker, idle, owner, keep_token, response, done);
        },
        owner);
  });
  return handle;
}

void PyExecCore::FinishBind(const std::shared_ptr<BindHandle>& handle, WorkerId worker,
                            absl::Duration idle, const std::string& owner,
                            const std::string& keep_token, v1::BindResponse* response,
                            const RpcDone& done) {
  std::string token;
  {
    absl::MutexLock lock(&handle->mu_);
    if (!handle->cancelled_) {
      token = keep_token.empty() ? sessions_->Add(worker, idle, owner)
                                 : sessions_->AddWithToken(keep_token, worker, idle, owner);
      handle->token_ = token;
    }
  }
  sessions_->ReleaseSlot(owner);
  if (token.empty()) {
    pool_->Release(worker);
    done(keep_token.empty() ? absl::CancelledError("the client cancelled the bind")
                            : absl::AlreadyExistsError("the session is already held here"));
    return;
  }
  LogInfo(absl::StrCat(keep_token.empty() ? "bind session " : "restored moved session ",
                       TokenForLog(token), " idle_timeout ", absl::FormatDuration(idle)));
  response->set_session(std::move(token));
  response->set_idle_timeout_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(idle)));
  {
    absl::MutexLock lock(&replica_mu_);
    response->set_owner(owner_address_);
  }
  done(absl::OkStatus());
}

CallId PyExecCore::Snapshot(const Caller& caller, const v1::SnapshotRequest& request,
                            absl::Time deadline, v1::SnapshotResponse* response, RpcDone done) {
  if (request.session().empty()) {
    done(absl::InvalidArgumentError("session is empty: only bound sessions have a state"));
    return 0;
  }
  if (seal_ == nullptr) {
    done(absl::FailedPreconditionError("snapshots are not enabled on this server"));
    return 0;
  }
  internal::WorkerRequest work;
  work.mutable_snapshot()->set_max_bytes(options_.max_snapshot_bytes);
  return Submit(
      caller, request.session(), std::move(work), deadline,
      [this, response, principal = caller.principal](internal::WorkerResponse& r) {
        internal::SnapshotResult& taken = *r.mutable_snapshot();
        internal::SnapshotEnvelope envelope;
        envelope.set_version(1);
        envelope.set_principal(principal);
        envelope.set_state(std::move(*taken.mutable_state()));
        *envelope.mutable_modules() = taken.modules();
        envelope.set_refs(taken.refs());
        envelope.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
        response->set_blob(seal_->Seal(envelope));
        *response->mutable_lost() = std::move(*taken.mutable_lost());
        *response->mutable_modules() = taken.modules();
        response->set_refs(taken.refs());
      },
      std::move(done));
}

absl::StatusOr<v1::SnapshotResponse> PyExecCore::SnapshotForMove(const std::string& token,
                                                                 const std::string& owner,
                                                                 absl::Time deadline) {
  sessions_->SetMoving(token, true);
  Caller caller(owner);
  caller.moving_call = true;
  v1::SnapshotRequest request;
  request.set_session(token);
  v1::SnapshotResponse response;
  absl::Notification done;
  absl::Status status;
  Snapshot(caller, request, deadline, &response, [&](absl::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  if (!status.ok()) return status;
  return response;
}

void PyExecCore::MovedOut(const std::string& token, const std::string& owner) {
  std::optional<WorkerId> worker = sessions_->Remove(token, owner);
  if (!worker.has_value()) return;
  pool_->Release(*worker);
  SessionEnded(token, "the session moved to another replica; attach again", /*moved=*/true);
}

absl::Status PyExecCore::Unbind(absl::string_view principal,
                                const v1::UnbindRequest& request) {
  std::optional<WorkerId> worker =
      sessions_->Remove(request.session(), principal);
  if (worker.has_value()) {
    LogInfo(absl::StrCat("unbind session ", TokenForLog(request.session())));
    pool_->Release(*worker);
    SessionEnded(request.session(), "unbound");
  }
  return absl::OkStatus();
}

CallId PyExecCore::Submit(const Caller& caller, const std::string& session,
                          internal::WorkerRequest request, absl::Time deadline,
                          std::function<void(internal::WorkerResponse&)> fill,
                          RpcDone done, CallEvent events) {
  request.set_max_refs(options_.max_refs_per_session);
  request.set_trace(caller.trace != nullptr);
  // A call the client makes while it runs a callback of a call on this
  // same session (or, stateless, of a stateless call) runs nested on that
  // call's interpreter, which waits for the callback's answer: queued
  // behind it, it would wait for ever.
  CallId nested_in = 0;
  if (!caller.callback.empty()) {
    std::optional<CallbackRegistry::Callback> outer =
        callbacks_.Find(caller.callback, caller.principal);
    if (outer.has_value() && outer->session == session) nested_in = outer->call;
  }
  WorkerId worker = 0;
  if (!session.empty()) {
    absl::StatusOr<WorkerId> found =
        sessions_->BeginCall(session, caller.principal, caller.moving_call);
    if (!found.ok()) {
      done(found.status());
      return 0;
    }
    worker = *found;
  }
  const bool named = !session.empty() && !caller.call_id.empty();
  if (named && !named_calls_.Arrive(session, caller.call_id)) {
    sessions_->EndCall(session);
    done(absl::CancelledError(
        "interrupted by an Interrupt request that arrived before the call; the session "
        "keeps its state"));
    return 0;
  }
  CallId id = pool_->Submit(
      worker, std::move(request), deadline,
      [this, session, worker, named, call_id = caller.call_id, trace = caller.trace,
       fill = std::move(fill),
       done = std::move(done)](absl::StatusOr<internal::WorkerResponse> result) {
        if (trace != nullptr && result.ok()) *trace = result->trace();
        if (named) named_calls_.Ended(session, call_id);
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
          done(absl::Status(static_cast<absl::StatusCode>(result->failure().code()),
                            result->failure().message()));
        } else {
          fill(*result);
          done(absl::OkStatus());
        }
      },
      caller.principal, std::move(events), nested_in);
  if (named && id != 0) {
    named_calls_.Started(session, caller.call_id, id,
                         [this](CallId call) { pool_->InterruptCall(call).IgnoreError(); });
  }
  return id;
}

CallId PyExecCore::Eval(const Caller& caller,
                        const v1::EvalRequest& request, absl::Time deadline,
                        v1::EvalResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Submit(caller, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_eval),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::Exec(const Caller& caller,
                        const v1::ExecRequest& request, absl::Time deadline,
                        v1::ExecResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Submit(caller, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_exec),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::Call(const Caller& caller,
                        const v1::CallRequest& request, absl::Time deadline,
                        v1::CallResponse* response, RpcDone done) {
  if (absl::Status bad = ValidateRequest(request, options_.max_value_depth); !bad.ok()) {
    done(bad);
    return 0;
  }
  return Submit(caller, request.session(),
             ToWorkerRequest(request, &internal::WorkerRequest::mutable_call),
             deadline,
             [response](internal::WorkerResponse& r) { MoveResult(r, response); },
             std::move(done));
}

CallId PyExecCore::ExecStream(const Caller& caller,
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
  return Submit(
      caller, request.session(), std::move(work), deadline,
      [sink](internal::WorkerResponse& r) {
        sink(ToEvent<v1::ExecEvent>(r), 0);
      },
      std::move(done),
      [sink](CallId id, internal::WorkerResponse event) {
        sink(ToEvent<v1::ExecEvent>(event), id);
      });
}

CallId PyExecCore::CallStream(const Caller& caller,
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
  return Submit(
      caller, request.session(), std::move(work), deadline,
      [sink](internal::WorkerResponse& r) {
        sink(ToEvent<v1::CallEvent>(r), 0);
      },
      std::move(done),
      [sink](CallId id, internal::WorkerResponse event) {
        sink(ToEvent<v1::CallEvent>(event), id);
      });
}

CallId PyExecCore::Release(const Caller& caller,
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
  return Submit(
      caller, request.session(), std::move(work), deadline,
      [response](internal::WorkerResponse& r) {
        response->set_released(r.released());
      },
      std::move(done));
}

absl::Status PyExecCore::Interrupt(const Caller& caller,
                                   const v1::InterruptRequest& request,
                                   v1::InterruptResponse* response) {
  const std::string& session = request.session();
  absl::StatusOr<WorkerId> worker = sessions_->BeginCall(session, caller.principal);
  if (!worker.ok()) return worker.status();
  sessions_->EndCall(session);
  if (!request.call_id().empty()) {
    response->set_interrupted(named_calls_.Interrupt(
        session, request.call_id(),
        [this](CallId call) { pool_->InterruptCall(call).IgnoreError(); }));
  } else {
    absl::StatusOr<bool> interrupted = pool_->InterruptWorker(*worker);
    if (!interrupted.ok()) return interrupted.status();
    response->set_interrupted(*interrupted);
  }
  if (response->interrupted()) {
    LogInfo(absl::StrCat("interrupt session ", TokenForLog(session)));
  }
  return absl::OkStatus();
}

CallId PyExecCore::RunWithCallbacks(const Caller& caller, const v1::RunRequest& request,
                                    absl::Time deadline, StreamSink<v1::RunEvent> sink,
                                    RpcDone done) {
  internal::WorkerRequest work;
  std::function<void(internal::WorkerResponse&)> fill;
  std::string session;
  absl::Status bad;
  switch (request.kind_case()) {
    case v1::RunRequest::kEval:
      bad = ValidateRequest(request.eval(), options_.max_value_depth);
      work = ToWorkerRequest(request.eval(), &internal::WorkerRequest::mutable_eval);
      session = request.eval().session();
      fill = [sink](internal::WorkerResponse& r) {
        v1::RunEvent event;
        MoveResult(r, event.mutable_eval());
        sink(std::move(event), 0);
      };
      break;
    case v1::RunRequest::kExec:
      bad = ValidateRequest(request.exec(), options_.max_value_depth);
      work = ToWorkerRequest(request.exec(), &internal::WorkerRequest::mutable_exec);
      session = request.exec().session();
      fill = [sink](internal::WorkerResponse& r) {
        v1::RunEvent event;
        MoveResult(r, event.mutable_exec());
        sink(std::move(event), 0);
      };
      break;
    case v1::RunRequest::kCall:
      bad = ValidateRequest(request.call(), options_.max_value_depth);
      work = ToWorkerRequest(request.call(), &internal::WorkerRequest::mutable_call);
      session = request.call().session();
      fill = [sink](internal::WorkerResponse& r) {
        v1::RunEvent event;
        MoveResult(r, event.mutable_call());
        sink(std::move(event), 0);
      };
      break;
    default:
      bad = absl::InvalidArgumentError("Run's first message must be an eval, exec or call");
      break;
  }
  if (!bad.ok()) {
    done(bad);
    return 0;
  }
  work.set_callbacks(true);
  // Each callback Python asks for is registered under an id the client
  // answers with; the call's unanswered ones go when it ends.
  auto id = std::make_shared<std::atomic<CallId>>(0);
  CallEvent events = [this, sink, principal = caller.principal, session](
                         CallId call, internal::WorkerResponse event) {
    if (!event.has_callback()) {
      EventConsumed(call);  // nothing else is streamed on Run
      return;
    }
    internal::WorkerCallback& asked = *event.mutable_callback();
    v1::RunEvent out;
    v1::CallbackRequest* request = out.mutable_callback();
    request->set_id(callbacks_.Add({call, asked.seq(), principal, session}));
    request->set_name(std::move(*asked.mutable_name()));
    request->mutable_args()->Swap(asked.mutable_args());
    request->mutable_kwargs()->swap(*asked.mutable_kwargs());
    sink(std::move(out), call);
  };
  CallId call = Submit(
      caller, session, std::move(work), deadline, std::move(fill),
      [this, id, done = std::move(done)](absl::Status status) {
        if (CallId ended = id->load(); ended != 0) callbacks_.EndCall(ended);
        done(std::move(status));
      },
      std::move(events));
  id->store(call);
  return call;
}

absl::Status PyExecCore::AnswerCallback(const Caller& caller,
                                        const v1::CallbackResult& result) {
  std::optional<CallbackRegistry::Callback> callback =
      callbacks_.Take(result.id(), caller.principal);
  if (!callback.has_value()) {
    return absl::NotFoundError(
        "no such callback is waiting (answered already, its call ended, or not this "
        "caller's)");
  }
  internal::WorkerRequest frame;
  internal::CallbackAnswer* answer = frame.mutable_callback_answer();
  answer->set_seq(callback->seq);
  if (result.has_error()) {
    *answer->mutable_error() = result.error();
  } else if (absl::Status bad = ValidateValue(result.value(), options_.max_value_depth);
             !bad.ok()) {
    // Python hears why instead of waiting for an answer that never comes.
    answer->mutable_error()->set_type("ValueError");
    answer->mutable_error()->set_message(
        absl::StrCat("the client's answer is not a valid value: ", bad.message()));
  } else if (result.has_value()) {
    *answer->mutable_value() = result.value();
  } else {
    answer->mutable_value()->mutable_none();
  }
  return pool_->SendToCall(callback->call, std::move(frame));
}

absl::StatusOr<std::shared_ptr<Lease>> PyExecCore::Attach(
    const Caller& caller, const v1::AttachRequest& request,
    std::function<void(std::string reason, bool moved)> on_end) {
  if (request.session().empty()) {
    return absl::InvalidArgumentError("session is empty: only bound sessions have leases");
  }
  if (absl::Status s = sessions_->AddLease(request.session(), caller.principal); !s.ok()) {
    return s;
  }
  auto lease = std::make_shared<Lease>(this, request.session());
  absl::MutexLock lock(&leases_mu_);
  lease_watchers_[request.session()][lease.get()] = std::move(on_end);
  return lease;
}

void Lease::Release() {
  {
    absl::MutexLock lock(&mu_);
    if (released_) return;
    released_ = true;
  }
  core_->ReleaseLease(session_, this);
}

void PyExecCore::ReleaseLease(const std::string& session, Lease* lease) {
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = lease_watchers_.find(session);
    if (it != lease_watchers_.end()) {
      it->second.erase(lease);
      if (it->second.empty()) lease_watchers_.erase(it);
    }
  }
  sessions_->DropLease(session);
}

void PyExecCore::SessionEnded(const std::string& session, const std::string& reason,
                              bool moved) {
  absl::flat_hash_map<Lease*, std::function<void(std::string, bool)>> watchers;
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = lease_watchers_.find(session);
    if (it != lease_watchers_.end()) {
      watchers = std::move(it->second);
      lease_watchers_.erase(it);
    }
  }
  for (auto& [lease, on_end] : watchers) on_end(reason, moved);
  named_calls_.ForgetSession(session);
  if (!moved && gone_listener_) gone_listener_(session);
}

void PyExecCore::EndAllLeases(const std::string& reason) {
  std::vector<std::string> leased;
  {
    absl::MutexLock lock(&leases_mu_);
    for (const auto& [session, watchers] : lease_watchers_) leased.push_back(session);
  }
  for (const std::string& session : leased) SessionEnded(session, reason);
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
  response.set_bindable_workers(
      static_cast<uint32_t>(std::max(0, pool_->max_workers() - static_cast<int>(stats.checked_out))));
  absl::MutexLock lock(&replica_mu_);
  response.set_replica(replica_);
  return response;
}

void PyExecCore::SetReplica(std::string replica, bool clients_may_dial) {
  absl::MutexLock lock(&replica_mu_);
  owner_address_ = clients_may_dial ? replica : "";
  replica_ = std::move(replica);
}

void PyExecCore::ReapExpiredSessions() {
  for (const SessionTable::Expired& expired : sessions_->TakeExpired()) {
    const char* why = expired.why == SessionTable::Expiry::kLeaseEnded
                          ? "its lease ended (the client is gone)"
                          : "idle";
    LogInfo(absl::StrCat("session ", TokenForLog(expired.token), " expired (", why, ")"));
    pool_->Release(expired.worker);
    SessionEnded(expired.token, absl::StrCat("expired: ", why));
  }
}

void PyExecCore::OnWorkerLost(WorkerId worker, const std::string& reason) {
  if (std::optional<std::string> token = sessions_->RemoveByWorker(worker)) {
    LogWarning(absl::StrCat("session ", TokenForLog(*token), " lost: ", reason));
    SessionEnded(*token, absl::StrCat("its worker died: ", reason));
  }
}

}  // namespace pyexec
