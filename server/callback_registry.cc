#include "server/callback_registry.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/session_table.h"

namespace pyexec {

std::string CallbackRegistry::Add(Callback callback) {
  std::string id = absl::StrCat(id_prefix_, "cb", NewSessionToken());
  absl::MutexLock lock(&mu_);
  callbacks_.emplace(id, std::move(callback));
  return id;
}

std::optional<CallbackRegistry::Callback> CallbackRegistry::Find(
    absl::string_view id, absl::string_view principal) const {
  absl::MutexLock lock(&mu_);
  auto it = callbacks_.find(id);
  if (it == callbacks_.end() || it->second.principal != principal) return std::nullopt;
  return it->second;
}

std::optional<CallbackRegistry::Callback> CallbackRegistry::Take(absl::string_view id,
                                                                 absl::string_view principal) {
  absl::MutexLock lock(&mu_);
  auto it = callbacks_.find(id);
  if (it == callbacks_.end() || it->second.principal != principal) return std::nullopt;
  Callback callback = std::move(it->second);
  callbacks_.erase(it);
  return callback;
}

void CallbackRegistry::EndCall(CallId call) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(callbacks_, [call](const auto& entry) { return entry.second.call == call; });
}

size_t CallbackRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return callbacks_.size();
}

}  // namespace pyexec
