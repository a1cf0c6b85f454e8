#ifndef PYEXEC_SERVER_CALLBACK_REGISTRY_H_
#define PYEXEC_SERVER_CALLBACK_REGISTRY_H_

// The callbacks Python is waiting on (pyexec.call), by the id their client
// sees: it answers with that id, and marks the calls it makes while running
// the callback with it (x-pyexec-callback), so that they run nested on the
// waiting interpreter. Ids are unguessable and carry the replica prefix of
// session tokens, so that a call marked with one finds its replica through
// any balancer. An id answers only to the principal whose call made it.
//
// Thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "context_pool/pool_ids.h"

namespace pyexec {

class CallbackRegistry {
 public:
  struct Callback {
    CallId call;            // the pool call waiting for the answer
    uint32_t seq;           // the worker's number for it
    std::string principal;  // who made that call
    std::string session;    // its session ("" for a stateless call)
  };

  // `id_prefix` is the replica's token prefix ("" when running alone).
  explicit CallbackRegistry(std::string id_prefix = "") : id_prefix_(std::move(id_prefix)) {}

  // Registers a callback; returns its id.
  std::string Add(Callback callback);
  // The callback `id`, if it is waiting and belongs to `principal`.
  std::optional<Callback> Find(absl::string_view id, absl::string_view principal) const;
  // Removes and returns it (it is being answered).
  std::optional<Callback> Take(absl::string_view id, absl::string_view principal);
  // The call ended: its callbacks are gone.
  void EndCall(CallId call);

  size_t size() const;

 private:
  const std::string id_prefix_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Callback> callbacks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_CALLBACK_REGISTRY_H_
