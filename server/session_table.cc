#include "server/session_table.h"

#include <sys/random.h>

#include <cstdlib>

#include "absl/strings/escaping.h"

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

std::string SessionTable::Add(WorkerId worker, absl::Duration idle_timeout) {
  std::string token = token_prefix_ + NewSessionToken();
  absl::MutexLock lock(&mu_);
  sessions_[token] = Session{worker, idle_timeout, now_()};
  by_worker_[worker] = token;
  return token;
}

absl::StatusOr<WorkerId> SessionTable::BeginCall(absl::string_view token) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) {
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

std::optional<WorkerId> SessionTable::Remove(absl::string_view token) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return std::nullopt;
  WorkerId worker = it->second.worker;
  by_worker_.erase(worker);
  sessions_.erase(it);
  return worker;
}

std::optional<std::string> SessionTable::RemoveByWorker(WorkerId worker) {
  absl::MutexLock lock(&mu_);
  auto it = by_worker_.find(worker);
  if (it == by_worker_.end()) return std::nullopt;
  std::string token = it->second;
  sessions_.erase(token);
  by_worker_.erase(it);
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
  for (const auto& [token, worker] : expired) {
    sessions_.erase(token);
    by_worker_.erase(worker);
  }
  return expired;
}

size_t SessionTable::size() const {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace pyexec
