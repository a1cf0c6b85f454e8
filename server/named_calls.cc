#include "server/named_calls.h"

#include <algorithm>

namespace pyexec {

void NamedCalls::DropExpiredHolds(Session& session, absl::Time now) {
  absl::erase_if(session.calls, [now](const auto& entry) {
    return entry.second.state == Entry::State::kHeldInterrupt && entry.second.held_until <= now;
  });
}

bool NamedCalls::Arrive(const std::string& session, const std::string& name) {
  absl::MutexLock lock(&mu_);
  Session& s = sessions_[session];
  auto it = s.calls.find(name);
  if (it != s.calls.end() && it->second.state == Entry::State::kHeldInterrupt &&
      it->second.held_until > now_()) {
    s.calls.erase(it);
    return false;
  }
  s.calls[name] = Entry{Entry::State::kArrived};
  return true;
}

void NamedCalls::Started(const std::string& session, const std::string& name, CallId id,
                         const std::function<void(CallId)>& interrupt) {
  bool interrupt_now = false;
  {
    absl::MutexLock lock(&mu_);
    auto s = sessions_.find(session);
    if (s == sessions_.end()) return;
    auto it = s->second.calls.find(name);
    if (it == s->second.calls.end() || it->second.state != Entry::State::kArrived) return;
    it->second.state = Entry::State::kRunning;
    it->second.id = id;
    interrupt_now = it->second.interrupt_pending;
  }
  // Outside the lock: the pool may finish the call, which calls Ended.
  if (interrupt_now) interrupt(id);
}

void NamedCalls::Ended(const std::string& session, const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto s = sessions_.find(session);
  if (s == sessions_.end()) return;
  s->second.calls.erase(name);
  s->second.ended.push_back(name);
  if (s->second.ended.size() > kRememberEnded) s->second.ended.pop_front();
  if (s->second.calls.empty() && s->second.ended.empty()) sessions_.erase(s);
}

bool NamedCalls::Interrupt(const std::string& session, const std::string& name,
                           const std::function<void(CallId)>& interrupt) {
  CallId running = 0;
  {
    absl::MutexLock lock(&mu_);
    Session& s = sessions_[session];
    const absl::Time now = now_();
    DropExpiredHolds(s, now);
    auto it = s.calls.find(name);
    if (it == s.calls.end()) {
      if (std::find(s.ended.begin(), s.ended.end(), name) != s.ended.end()) return false;
      Entry held{Entry::State::kHeldInterrupt};
      held.held_until = now + kHoldFor;
      s.calls[name] = held;
      return true;
    }
    switch (it->second.state) {
      case Entry::State::kHeldInterrupt:
        return true;
      case Entry::State::kArrived:
        it->second.interrupt_pending = true;
        return true;
      case Entry::State::kRunning:
        running = it->second.id;
        break;
    }
  }
  interrupt(running);
  return true;
}

void NamedCalls::ForgetSession(const std::string& session) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(session);
}

}  // namespace pyexec
