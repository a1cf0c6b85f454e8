#include "clients/cpp/lease_manager.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/support/client_callback.h"

namespace pyexec {
namespace internal {
namespace {

constexpr absl::Duration kFirstBackoff = absl::Milliseconds(50);
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);

// Failures after which attaching again cannot help.
bool IsFinal(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::INVALID_ARGUMENT:
      return true;
    default:
      return false;
  }
}

}  // namespace

// One Attach stream. Created, started, cancelled and deleted by the
// manager's thread only; its reactions only report to the manager.
class AttachReactor final : public grpc::ClientReadReactor<v1::AttachEvent> {
 public:
  AttachReactor(LeaseManager* manager, std::string session, Route route)
      : manager_(manager), session_(std::move(session)), route_(std::move(route)) {
    request_.set_session(session_);
  }

  void Start() {
    route_.stub->async()->Attach(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  const std::string& session() const { return session_; }
  const Route& route() const { return route_; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (event_.has_attached()) {
      manager_->OnAttached(this, event_.attached().grace_seconds());
    } else if (event_.has_ended()) {
      manager_->OnEnded(this);
    }
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override { manager_->OnDone(this, status); }

 private:
  LeaseManager* const manager_;
  const std::string session_;
  const Route route_;
  grpc::ClientContext context_;
  v1::AttachRequest request_;
  v1::AttachEvent event_;
};

LeaseManager::LeaseManager(Router* router) : router_(router) {}

LeaseManager::~LeaseManager() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    for (auto& [session, entry] : entries_) {
      if (entry->stream != nullptr) to_cancel_.push_back(entry->stream);
      entry->final = absl::CancelledError("the client ended its leases");
    }
    entries_.clear();
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

void LeaseManager::StartThreadLocked() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

absl::Status LeaseManager::Lease(const std::string& session, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::CancelledError("the client is closing");
  std::shared_ptr<Entry>& slot = entries_[session];
  if (slot == nullptr) {
    slot = std::make_shared<Entry>();
    slot->session = session;
    wake_ = true;
    StartThreadLocked();
  }
  const std::shared_ptr<Entry> entry = slot;
  auto settled = [&entry]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return entry->held || !entry->final.ok();
  };
  mu_.AwaitWithDeadline(absl::Condition(&settled), deadline);
  if (entry->held) return absl::OkStatus();
  if (!entry->final.ok()) return entry->final;
  return absl::DeadlineExceededError(
      absl::StrCat("the lease on ", session, " is not confirmed yet (still trying)"));
}

void LeaseManager::End(const std::string& session) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(session);
  if (it == entries_.end()) return;
  if (it->second->stream != nullptr) to_cancel_.push_back(it->second->stream);
  it->second->final = absl::CancelledError("the lease was ended");
  entries_.erase(it);
  wake_ = true;
}

std::optional<LeaseInfo> LeaseManager::Info(const std::string& session) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(session);
  if (it == entries_.end()) return std::nullopt;
  return LeaseInfo{it->second->held, it->second->attaches, it->second->grace_seconds};
}

void LeaseManager::OnAttached(AttachReactor* stream, int64_t grace_seconds) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(stream->session());
  if (it == entries_.end() || it->second->stream != stream) return;
  it->second->held = true;
  it->second->failures = 0;
  it->second->grace_seconds = grace_seconds;
}

void LeaseManager::OnEnded(AttachReactor* stream) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(stream->session());
  if (it == entries_.end() || it->second->stream != stream) return;
  it->second->ended = true;
}

void LeaseManager::OnDone(AttachReactor* stream, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  --live_streams_;
  done_.push_back(stream);
  wake_ = true;
  auto it = entries_.find(stream->session());
  if (it == entries_.end() || it->second->stream != stream) return;  // ended by us
  Entry& entry = *it->second;
  entry.stream = nullptr;
  entry.held = false;
  if (entry.ended) {
    entry.final = absl::NotFoundError("the session ended while leased");
    entries_.erase(it);
    return;
  }
  if (IsFinal(status.error_code())) {
    entry.final = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                               status.error_message());
    entries_.erase(it);
    return;
  }
  // UNAVAILABLE from the owner: the session moved or the owner cannot be
  // reached from here; attach again through the target.
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    router_->OwnerFailed(stream->route(), stream->session());
  }
  const absl::Duration backoff =
      entry.failures == 0 ? absl::ZeroDuration()
                          : std::min(kMaxBackoff, kFirstBackoff * (1 << std::min(entry.failures - 1, 10)));
  ++entry.failures;
  entry.retry_at = absl::Now() + backoff;
}

std::vector<std::string> LeaseManager::Due(absl::Time now) {
  std::vector<std::string> due;
  for (const auto& [session, entry] : entries_) {
    if (entry->stream == nullptr && entry->retry_at <= now) due.push_back(session);
  }
  return due;
}

absl::Time LeaseManager::NextRetry() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [session, entry] : entries_) {
    if (entry->stream == nullptr) next = std::min(next, entry->retry_at);
  }
  return next;
}

bool LeaseManager::HasWork() const {
  return wake_ || !to_cancel_.empty() || !done_.empty() ||
         (shutdown_ && live_streams_ == 0);
}

void LeaseManager::Loop() {
  mu_.Lock();
  while (true) {
    auto work = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return HasWork(); };
    mu_.AwaitWithDeadline(absl::Condition(&work), shutdown_ ? absl::InfiniteFuture() : NextRetry());
    wake_ = false;
    std::vector<AttachReactor*> cancel = std::move(to_cancel_);
    std::vector<AttachReactor*> done = std::move(done_);
    to_cancel_.clear();
    done_.clear();
    std::vector<std::string> due;
    if (!shutdown_) due = Due(absl::Now());
    const bool finished = shutdown_ && live_streams_ == 0 && cancel.empty();
    mu_.Unlock();
    // gRPC may run a reaction inline in TryCancel or StartCall: none of
    // this runs under mu_.
    for (AttachReactor* stream : cancel) stream->Cancel();
    for (AttachReactor* stream : done) delete stream;
    std::vector<AttachReactor*> started;
    for (const std::string& session : due) {
      // May wait up to the router's connect timeout for an owner.
      auto stream = std::make_unique<AttachReactor>(this, session, router_->For(session));
      mu_.Lock();
      auto it = entries_.find(session);
      if (!shutdown_ && it != entries_.end() && it->second->stream == nullptr) {
        it->second->stream = stream.get();
        ++it->second->attaches;
        ++live_streams_;
        started.push_back(stream.release());
      }
      mu_.Unlock();
    }
    for (AttachReactor* stream : started) stream->Start();
    mu_.Lock();
    if (finished) break;
  }
  mu_.Unlock();
}

}  // namespace internal
}  // namespace pyexec
