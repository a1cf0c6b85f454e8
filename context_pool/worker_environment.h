#ifndef PYEXEC_CONTEXT_POOL_WORKER_ENVIRONMENT_H_
#define PYEXEC_CONTEXT_POOL_WORKER_ENVIRONMENT_H_

// The environment workers start with. Never pyexecd's own: in Kubernetes
// that often carries credentials (cloud keys, service tokens), and a session
// must not see them. A worker gets:
//   - PATH (/usr/local/bin:/usr/bin:/bin) and LANG (pyexecd's, else
//     C.UTF-8);
//   - the interpreter's own variables: every PYTHON* variable of pyexecd;
//   - the variables named by --worker_env_passthrough, where pyexecd has
//     them;
//   - the NAME=VALUE pairs of --worker_env;
// and HOME and TMPDIR, its private directory, which each worker sets itself.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pyexec {

// The workers' environment as NAME=VALUE strings, from `parent` (pyexecd's
// environment, NAME=VALUE strings). INVALID_ARGUMENT for a malformed pair or
// name, or an attempt to set HOME or TMPDIR, naming the flag.
absl::StatusOr<std::vector<std::string>> BuildWorkerEnvironment(
    const std::vector<std::string>& parent, const std::vector<std::string>& passthrough,
    const std::vector<std::string>& extra);

// This process's environment as NAME=VALUE strings.
std::vector<std::string> CurrentEnvironment();

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_WORKER_ENVIRONMENT_H_
