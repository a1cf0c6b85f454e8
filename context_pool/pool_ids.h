#ifndef PYEXEC_CONTEXT_POOL_POOL_IDS_H_
#define PYEXEC_CONTEXT_POOL_POOL_IDS_H_

// The pool's identifiers, apart from the pool, so that users that only keep
// them (the session table) do not depend on the whole pool.

#include <cstdint>

namespace pyexec {

// Identifies a checked-out worker (a session's interpreter). Never reused.
using WorkerId = uint64_t;
// Identifies a submitted call, for Cancel. Never reused.
using CallId = uint64_t;

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_POOL_IDS_H_
