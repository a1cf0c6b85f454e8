#include "server/session_table.h"

#include <sys/random.h>

#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace pyexec {

std::string NewSessionToken() {
  char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    // getrandom only fails on bad arguments or before the pool is seeded
    // with GRND_NONBLOCK; neither applies. No token without entropy.
    if (n < 0) {
      if (errno == EINTR) continue;
      abort();
    }
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
}

std::string SessionTable::Add(WorkerId worker, absl::Duration idle_timeout,
                              absl::string_view owner) {
  // 128 random bits: a clash is not a case to handle.
  return AddWithToken(token_prefix_ + NewSessionToken(), worker, idle_timeout, owner);
}

std::string SessionTable::AddWithToken(const std::string& token, WorkerId worker,
                                       absl::Duration idle_timeout, absl::string_view owner) {
  absl::MutexLock lock(&mu_);
  if (token.empty() || sessions_.contains(token)) return "";
  Session& session = sessions_[token];
  session = Session{worker, idle_timeout, now_(), 0, std::string(owner)};
  by_worker_[worker] = token;
  ++owned_[owner];
  ScheduleLocked(token, session, ExpiresAt(session));
  return token;
}

bool SessionTable::Holds(absl::string_view token) const {
  absl::MutexLock lock(&mu_);
  return sessions_.contains(token);
}

std::vector<SessionTable::Listed> SessionTable::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<Listed> listed;
  listed.reserve(sessions_.size());
  for (const auto& [token, session] : sessions_) {
    listed.push_back({token, session.owner, session.idle_timeout, session.calls_in_flight});
  }
  return listed;
}

void SessionTable::SetMoving(absl::string_view token, bool moving) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it != sessions_.end()) it->second.moving = moving;
}

absl::Time SessionTable::ExpiresAt(const Session& session) {
  if (session.leases > 0) return absl::InfiniteFuture();
  return std::min(session.last_used + session.idle_timeout, session.lease_deadline);
}

void SessionTable::ScheduleLocked(const std::string& token, Session& session,
                                  absl::Time when) {
  session.generation = next_generation_++;
  if (when == absl::InfiniteFuture()) return;
  const bool earliest = due_.empty() || when < due_.top().when;
  due_.push(Due{when, token, session.generation});
  if (earliest && wake_) wake_();
}

absl::Duration SessionTable::TimeToNextExpiry() const {
  absl::MutexLock lock(&mu_);
  if (due_.empty()) return absl::InfiniteDuration();
  return std::max(due_.top().when - now_(), absl::ZeroDuration());
}

void SessionTable::SetExpiryWake(std::function<void()> wake) {
  absl::MutexLock lock(&mu_);
  wake_ = std::move(wake);
}

absl::Status SessionTable::AddLease(absl::string_view token, absl::string_view principal) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end() || it->second.owner != principal) {
    return absl::NotFoundError("session not found (unknown, expired or unbound token)");
  }
  ++it->second.leases;
  it->second.lease_deadline = absl::InfiniteFuture();
  // Not scheduled while leased: its entry, when due, finds it leased.
  return absl::OkStatus();
}

void SessionTable::DropLease(absl::string_view token) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end() || it->second.leases == 0) return;
  Session& session = it->second;
  if (--session.leases > 0) return;
  // The lease held it until now, so the idle clock starts now too: the
  // grace decides, unless the idle timeout is the shorter.
  session.last_used = now_();
  session.lease_deadline = session.last_used + lease_grace_;
  ScheduleLocked(it->first, session, ExpiresAt(session));
}

absl::Status SessionTable::ReserveSlot(absl::string_view owner, int limit) {
  absl::MutexLock lock(&mu_);
  int& count = owned_[owner];
  if (limit > 0 && count >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "session limit reached: this principal already has ", count,
        " sessions (--max_sessions_per_principal)"));
  }
  ++count;
  return absl::OkStatus();
}

void SessionTable::ReleaseSlot(absl::string_view owner) {
  absl::MutexLock lock(&mu_);
  auto it = owned_.find(owner);
  if (it != owned_.end() && --it->second <= 0) owned_.erase(it);
}

int SessionTable::CountOwnedBy(absl::string_view owner) const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [token, session] : sessions_) n += session.owner == owner;
  return n;
}

void SessionTable::EraseLocked(
    absl::flat_hash_map<std::string, Session>::iterator it) {
  auto owned = owned_.find(it->second.owner);
  if (owned != owned_.end() && --owned->second <= 0) owned_.erase(owned);
  by_worker_.erase(it->second.worker);
  sessions_.erase(it);
}

absl::StatusOr<WorkerId> SessionTable::BeginCall(absl::string_view token,
                                                 absl::string_view principal,
                                                 bool moving_call) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  // A foreign token gets the very same answer as an unknown one.
  if (it == sessions_.end() || it->second.owner != principal) {
    return absl::NotFoundError(
        "session not found (unknown, expired or unbound token)");
  }
  if (it->second.moving && !moving_call) {
    return absl::UnavailableError(
        "the session is moving to another replica (this one is draining); retry the call");
  }
  ++it->second.calls_in_flight;
  it->second.last_used = now_();
  return it->second.worker;
}

void SessionTable::EndCall(absl::string_view token) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return;
  --it->second.calls_in_flight;
  it->second.last_used = now_();
}

std::optional<WorkerId> SessionTable::Remove(absl::string_view token,
                                             absl::string_view principal) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end() || it->second.owner != principal) {
    return std::nullopt;
  }
  WorkerId worker = it->second.worker;
  EraseLocked(it);
  return worker;
}

std::optional<std::string> SessionTable::RemoveByWorker(WorkerId worker) {
  absl::MutexLock lock(&mu_);
  auto it = by_worker_.find(worker);
  if (it == by_worker_.end()) return std::nullopt;
  std::string token = it->second;
  EraseLocked(sessions_.find(token));
  return token;
}

std::vector<SessionTable::Expired> SessionTable::TakeExpired() {
  absl::MutexLock lock(&mu_);
  std::vector<Expired> expired;
  const absl::Time now = now_();
  while (!due_.empty() && due_.top().when <= now) {
    Due due = due_.top();
    due_.pop();
    auto it = sessions_.find(due.token);
    if (it == sessions_.end() || it->second.generation != due.generation) continue;
    Session& session = it->second;
    const absl::Time at = ExpiresAt(session);
    if (at == absl::InfiniteFuture()) {
      // Leased: DropLease schedules it again when the last lease ends.
      continue;
    }
    if (session.calls_in_flight > 0 || at > now) {
      // Used since (or busy now): looked at again when it could expire.
      ScheduleLocked(due.token, session, std::max(at, now + absl::Seconds(1)));
      continue;
    }
    expired.push_back({due.token, session.worker,
                       session.lease_deadline <= now ? Expiry::kLeaseEnded : Expiry::kIdle});
    EraseLocked(it);
  }
  return expired;
}

size_t SessionTable::size() const {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace pyexec
