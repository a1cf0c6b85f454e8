#ifndef PYEXEC_WORKER_PYTHON_RUNNER_H_
#define PYEXEC_WORKER_PYTHON_RUNNER_H_

#include <cstddef>

#include "absl/status/status.h"
#include "common/limits.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {

// Limits a worker applies to each request.
struct RunnerLimits {
  // Captured stdout and stderr per call, each; longer output is cut and a
  // marker line saying so is appended.
  size_t max_output_bytes = kDefaultMaxOutputBytes;
  // Container nesting of Values in requests and results.
  int max_value_depth = kDefaultMaxValueDepth;
};

// Runs Eval/Exec/Call requests in the embedded interpreter of this process.
//
// One per worker process; the interpreter is process-global. Not thread-safe:
// the worker handles one request at a time on its main thread.
class PythonRunner {
 public:
  explicit PythonRunner(const RunnerLimits& limits) : limits_(limits) {}
  PythonRunner(const PythonRunner&) = delete;
  PythonRunner& operator=(const PythonRunner&) = delete;

  // Initialises CPython (with its SIGINT handler, so that an interrupt from
  // the server raises KeyboardInterrupt) and loads the runner's helpers.
  absl::Status Initialize();

  // Runs one request and fills `response` (id, value or error, output, or a
  // failure for a request that cannot be run, e.g. a Value nested too deep).
  void Handle(const internal::WorkerRequest& request,
              internal::WorkerResponse* response);

  // Version string of the embedded interpreter.
  static const char* PythonVersion();

 private:
  const RunnerLimits limits_;
  // Borrowed from the helper module, alive for the process lifetime.
  struct Helpers* helpers_ = nullptr;
};

}  // namespace pyexec

#endif  // PYEXEC_WORKER_PYTHON_RUNNER_H_
