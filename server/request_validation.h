#ifndef PYEXEC_SERVER_REQUEST_VALIDATION_H_
#define PYEXEC_SERVER_REQUEST_VALIDATION_H_

// Every check of a request's content before it reaches a worker, in one
// place, with the limits the worker shares (WorkerSettings carries the same
// max_value_depth). A request that passes here is one the worker can read
// and convert; one that fails gets INVALID_ARGUMENT with the reason, and no
// worker ever sees it.

#include "absl/status/status.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// A Value nested more than `max_depth` containers deep, or a scalar that
// carries items or keys, or a dict whose keys and items differ in number.
absl::Status ValidateValue(const v1::Value& value, int max_depth);

absl::Status ValidateRequest(const v1::EvalRequest& request, int max_value_depth);
absl::Status ValidateRequest(const v1::ExecRequest& request, int max_value_depth);
absl::Status ValidateRequest(const v1::CallRequest& request, int max_value_depth);
absl::Status ValidateRequest(const v1::ReleaseRequest& request);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_REQUEST_VALIDATION_H_
