#ifndef PYEXEC_CONTEXT_POOL_WORKER_OUTPUT_H_
#define PYEXEC_CONTEXT_POOL_WORKER_OUTPUT_H_

// Where workers' standard output and error go: one pipe, shared by the
// zygote and every worker, whose read end pyexecd drains into its own log.
// What user code writes to file descriptors 1 and 2 (a subprocess that is
// not captured, a C extension's printf) thus never reaches pyexecd's
// terminal (where a worker could type into the operator's shell), and it
// cannot pass for one of pyexecd's own log lines: each line is logged
// behind a fixed "worker output: " marker, with control characters escaped
// and its length cut. The pump reads at once, so writers do not block, and
// logs at most a budget of bytes per second, counting what it drops.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace pyexec {

class WorkerOutputLog {
 public:
  struct Options {
    // Longest line logged; the rest of a longer line is dropped.
    size_t max_line_bytes = 1024;
    // Bytes of lines logged per second, on average over a few seconds.
    size_t bytes_per_second = 64 << 10;
    // Where lines go (tests capture them); default LogInfo.
    std::function<void(absl::string_view line)> sink;
  };

  // Creates the pipe and starts the thread that drains it.
  static absl::StatusOr<std::unique_ptr<WorkerOutputLog>> Start(Options options);
  // Logs what is still buffered and stops. Workers still holding the write
  // end then get EPIPE (Python ignores SIGPIPE).
  ~WorkerOutputLog();

  // The write end, to pass as the workers' stdout and stderr.
  int write_fd() const { return write_.get(); }

  // The line as logged: control characters (escape sequences, carriage
  // returns) shown as \xNN, cut at `max_bytes`.
  static std::string Sanitize(absl::string_view line, size_t max_bytes);

 private:
  WorkerOutputLog(Options options, UniqueFd read, UniqueFd write, UniqueFd stop);
  void Run();

  const Options options_;
  UniqueFd read_;
  UniqueFd write_;
  UniqueFd stop_;  // eventfd: tells the thread to finish
  std::thread thread_;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_WORKER_OUTPUT_H_
