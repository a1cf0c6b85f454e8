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
  std::string token = token_prefix_ + NewSessionToken();
  absl::MutexLock lock(&mu_);
  sessions_[token] =
      Session{worker, idle_timeout, now_(), 0, std::string(owner)};
  by_worker_[worker] = token;
  ++owned_[owner];
  return token;
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
                                                 absl::string_view principal) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  // A foreign token gets the very same answer as an unknown one.
  if (it == sessions_.end() || it->second.owner != principal) {
    return absl::NotFoundError(
        "session not found (unknown, expired or unbound token)");
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

std::vector<std::pair<std::string, WorkerId>> SessionTable::TakeExpired() {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, WorkerId>> expired;
  const absl::Time now = now_();
  for (const auto& [token, session] : sessions_) {
    if (session.calls_in_flight == 0 &&
        now - session.last_used >= session.idle_timeout) {
      expired.emplace_back(token, session.worker);
    }
  }
  for (const auto& [token, worker] : expired) EraseLocked(sessions_.find(token));
  return expired;
}

size_t SessionTable::size() const {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace pyexec
