#include "server/run_reactor.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "server/status_util.h"

namespace pyexec {

// The forwarded form: our own Run stream to the session's owner, relaying
// the client's messages to it and its events back.
class RunReactor::Forwarded final
    : public grpc::ClientBidiReactor<v1::RunRequest, v1::RunEvent> {
 public:
  Forwarded(RunReactor* owner, std::shared_ptr<const Peer> peer)
      : owner_(owner), peer_(std::move(peer)) {}

  void Start(const v1::RunRequest& first) {
    owner_->service_->forwarder()->PrepareContext(*owner_->context_, owner_->caller_->principal,
                                                  &client_);
    peer_->stub->async()->Run(&client_, this);
    Write(first);
    StartRead(&event_);
    StartCall();
  }

  // Relays one client message (writes are serialised: one in flight).
  // After OnDone the stream is gone: Write, WritesDone and Cancel then do
  // nothing (the client's last messages may cross the owner's answer).
  void Write(v1::RunRequest message) {
    absl::MutexLock lock(&mu_);
    if (done_) return;
    queue_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
  }
  // The client will send nothing more.
  void WritesDone() {
    absl::MutexLock lock(&mu_);
    if (done_) return;
    if (writing_) {
      writes_done_pending_ = true;
    } else {
      StartWritesDone();
    }
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    if (!done_) client_.TryCancel();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) return;  // the stream ended; its status comes in OnDone
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
    } else if (writes_done_pending_) {
      writes_done_pending_ = false;
      StartWritesDone();
    }
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the owner's status follows in OnDone
    owner_->Send(std::move(event_), 0);
    event_.Clear();
    StartRead(&event_);
  }
  void OnDone(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    grpc::Status answer = ForwardedStatus(client_, status, *peer_,
                                          owner_->service_->forwarder()->metrics(), Rpc::kRun,
                                          owner_->received_);
    // May delete the owner, and this with it: the last thing done here.
    owner_->End(absl::Status(static_cast<absl::StatusCode>(answer.error_code()),
                             answer.error_message()));
  }

 private:
  RunReactor* const owner_;
  const std::shared_ptr<const Peer> peer_;  // keeps the channel alive
  grpc::ClientContext client_;
  v1::RunEvent event_;
  absl::Mutex mu_;
  std::deque<v1::RunRequest> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran: the stream is gone
};

RunReactor::RunReactor(const PyExecService* service, grpc::CallbackServerContext* context)
    : service_(service),
      context_(context),
      received_(absl::Now()),
      caller_(service->CallerOf(*context)),
      canceller_([core = service->core()](CallId id) { core->Cancel(id); }) {
  if (!caller_.ok()) {
    absl::MutexLock lock(&mu_);
    FinishLocked(caller_.status());
    return;
  }
  ReadNext();
}

void RunReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client sends nothing more (or the stream broke: OnCancel says so).
    if (!started_) {
      absl::MutexLock lock(&mu_);
      FinishLocked(absl::InvalidArgumentError("Run got no request"));
    } else if (forwarded_ != nullptr) {
      forwarded_->WritesDone();
    } else {
      absl::MutexLock lock(&mu_);
      half_closed_ = true;
      PumpLocked();
    }
    return;
  }
  if (!started_) {
    started_ = true;
    Start();
    return;
  }
  if (absl::Status bad = v1::MalformedRequestError(in_); !bad.ok()) {
    absl::MutexLock lock(&mu_);
    FinishLocked(bad);
  } else if (forwarded_ != nullptr) {
    forwarded_->Write(std::move(in_));
  } else if (in_.kind_case() != v1::RunRequest::kCallbackResult) {
    absl::MutexLock lock(&mu_);
    FinishLocked(absl::InvalidArgumentError(
        "after its first message (the call), Run takes only callback results"));
  } else if (!TakeAsked(in_.callback_result().id())) {
    absl::MutexLock lock(&mu_);
    FinishLocked(absl::InvalidArgumentError(absl::StrCat(
        "callback result for id \"", absl::CHexEscape(absl::string_view(in_.callback_result().id()).substr(0, 64)),
        "\", which this Run did not ask for (or was answered already)")));
  } else if (absl::Status answered =
                 service_->core()->AnswerCallback(*caller_, in_.callback_result());
             !answered.ok()) {
    // A late answer (Python stopped waiting: its deadline, an Interrupt)
    // changes nothing.
    LogInfo(absl::StrCat("Run: callback answer not delivered: ", answered.message()));
  }
  bool finished;
  {
    absl::MutexLock lock(&mu_);
    finished = finished_;
  }
  if (finished) {
    OnCancel();
    return;
  }
  ReadNext();
}

void RunReactor::ReadNext() {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  in_.Clear();
  StartRead(&in_);
}

void RunReactor::Start() {
  if (absl::Status bad = v1::MalformedRequestError(in_); !bad.ok()) {
    absl::MutexLock lock(&mu_);
    FinishLocked(bad);
    return;
  }
  const std::string* session = nullptr;
  switch (in_.kind_case()) {
    case v1::RunRequest::kEval:
      session = &in_.eval().session();
      break;
    case v1::RunRequest::kExec:
      session = &in_.exec().session();
      break;
    case v1::RunRequest::kCall:
      session = &in_.call().session();
      break;
    default: {
      absl::MutexLock lock(&mu_);
      FinishLocked(absl::InvalidArgumentError("Run's first message must be an eval, exec or call"));
      return;
    }
  }
  absl::StatusOr<std::shared_ptr<const Peer>> owner =
      service_->Route(context_, *session, *caller_, Rpc::kRun);
  if (!owner.ok()) {
    absl::MutexLock lock(&mu_);
    FinishLocked(owner.status());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++refs_;  // the call's end
  }
  if (*owner != nullptr) {
    forwarded_ = std::make_unique<Forwarded>(this, std::move(*owner));
    forwarded_->Start(in_);
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      forwarding_ = forwarded_.get();
      cancelled = cancelled_;
    }
    if (cancelled) forwarded_->Cancel();
  } else {
    canceller_.Set(service_->core()->RunWithCallbacks(
        *caller_, in_, service_->DeadlineOf(*context_),
        [this](v1::RunEvent event, CallId ack) { Send(std::move(event), ack); },
        [this](absl::Status status) { End(std::move(status)); }));
  }
  ReadNext();
}

bool RunReactor::TakeAsked(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return asked_.erase(id) > 0;
}

void RunReactor::Send(v1::RunEvent event, CallId ack) {
  {
    absl::MutexLock lock(&mu_);
    if (!finished_) {
      // Only the callbacks asked on this stream may be answered on it.
      if (event.has_callback() && forwarded_ == nullptr) asked_.insert(event.callback().id());
      queue_.push_back({std::move(event), ack});
      PumpLocked();
      return;
    }
  }
  if (ack != 0) service_->core()->EventConsumed(ack);  // nobody will write it
}

void RunReactor::End(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    end_status_ = std::move(status);
    PumpLocked();
  }
  Unref();
}

void RunReactor::OnWriteDone(bool ok) {
  CallId ack;
  bool broken = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    ack = queue_.front().ack;
    queue_.pop_front();
    if (!ok) {
      broken = true;
      FinishLocked(absl::CancelledError("the stream to the client broke"));
    } else {
      PumpLocked();
    }
  }
  if (ack != 0) service_->core()->EventConsumed(ack);
  if (broken) OnCancel();
}

void RunReactor::OnCancel() {
  Forwarded* forwarding;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    forwarding = forwarding_;
    PumpLocked();  // an ended call waiting for the client's half-close
  }
  canceller_.Cancel();
  if (forwarding != nullptr) forwarding->Cancel();
}

void RunReactor::OnDone() { Unref(); }

void RunReactor::PumpLocked() {
  if (writing_ || finished_) return;
  if (!queue_.empty()) {
    writing_ = true;
    StartWrite(&queue_.front().event);
  } else if (ended_) {
    // A successful Run ends once the client has closed its side too: it
    // does so when the response arrives. Ending first would make the
    // server reset the client's open half (RST_STREAM NO_ERROR), and some
    // balancers (HAProxy) turn that into CANCEL and drop the status. A
    // failed Run ends at once: the client may be waiting for a response
    // that will not come.
    if (end_status_.ok() && !half_closed_ && !cancelled_ && forwarded_ == nullptr) return;
    FinishLocked(end_status_);
  }
}

void RunReactor::FinishLocked(const absl::Status& status) {
  if (finished_) return;
  finished_ = true;
  grpc::Status reply = ToGrpcStatus(status);
  if (Metrics* metrics = service_->metrics(); metrics != nullptr && forwarded_ == nullptr) {
    metrics->RecordCall(Rpc::kRun, reply.error_code(), absl::Now() - received_);
  }
  Finish(reply);
}

void RunReactor::Unref() {
  bool last;
  {
    absl::MutexLock lock(&mu_);
    last = --refs_ == 0;
  }
  if (last) delete this;
}

}  // namespace pyexec
