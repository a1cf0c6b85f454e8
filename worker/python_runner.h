#ifndef PYEXEC_WORKER_PYTHON_RUNNER_H_
#define PYEXEC_WORKER_PYTHON_RUNNER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "pyexec/v1/worker.pb.h"
#include "worker/py_ref.h"

namespace pyexec {

// Limits a worker applies to each request.
struct RunnerLimits {
  // Captured stdout and stderr per call, each; longer output is cut and a
  // marker line saying so is appended.
  size_t max_output_bytes = kDefaultMaxOutputBytes;
  // Container nesting of Values in requests and results.
  int max_value_depth = kDefaultMaxValueDepth;
  // Largest partial response (one streamed value); a bigger item ends the
  // stream with RESOURCE_EXHAUSTED.
  size_t max_response_bytes = kDefaultMaxMessageBytes;
};

// Sends one frame to pyexecd. Called with the GIL released, from the main
// thread or from the output flusher thread; must be thread-safe. Returns
// false if the frame could not be written.
using FrameSender = std::function<bool(const internal::WorkerResponse&)>;

// Reads the next frame from pyexecd, waiting until `deadline`
// (InfiniteFuture: no limit): its payload; DEADLINE_EXCEEDED at the
// deadline; CANCELLED when a signal interrupted the wait (the caller checks
// Python's signals and waits again); another error when the socket failed.
// Called with the GIL released.
using FrameReceiver = std::function<absl::StatusOr<std::string>(absl::Time deadline)>;

// Replaces a response too big for gRPC with a failure, so that the worker
// and its session survive an oversized result.
void CapResponse(size_t max_bytes, internal::WorkerResponse* response);

// Runs Eval/Exec/Call (and Release, Snapshot, Restore) requests in the
// embedded interpreter of this process.
//
// One per worker process; the interpreter is process-global. Not thread-safe:
// the worker handles one request at a time on its main thread.
class PythonRunner {
 public:
  explicit PythonRunner(const RunnerLimits& limits);
  ~PythonRunner();

  // Sets where the partial responses of streamed requests go (the socket
  // to pyexecd, known only once a zygote has forked this worker).
  // REQUIRES: before the first streamed request.
  void SetFrameSender(FrameSender send) { send_ = std::move(send); }
  // Sets where a callback's answer (and the nested calls made while the
  // client runs it) come from: the same socket.
  // REQUIRES: before the first request with callbacks.
  void SetFrameReceiver(FrameReceiver receive) { receive_ = std::move(receive); }
  PythonRunner(const PythonRunner&) = delete;
  PythonRunner& operator=(const PythonRunner&) = delete;

  // Initialises CPython (with its SIGINT handler, so that an interrupt from
  // the server raises KeyboardInterrupt) and loads the runner's helpers.
  absl::Status Initialize();

  // In the zygote, once, when it is known to run a single thread: prepares
  // forks (runner.py before_forks: disarms threading's after-fork hook,
  // which only costs copy-on-write faults in the zygote's workers).
  absl::Status BeforeForks();

  // In a worker forked from a zygote, once confined: re-arms that hook,
  // reseeds `random`, and with `private_dir` (empty: none) points
  // os.environ HOME/TMPDIR and tempfile at it (runner.py after_fork).
  absl::Status AfterFork(const std::string& private_dir);

  // Runs one request and fills `response` (id, value or error, output, or a
  // failure for a request that cannot be run, e.g. a Value nested too deep).
  // A request with `stream` set sends its output chunks and values through
  // the FrameSender first, as partial responses. Re-entrant: a call that
  // waits for a callback's answer runs the requests that arrive meanwhile
  // (calls the client makes from its callback) through Handle, nested.
  //
  // `snapshot` (a bound session) serializes the session's __main__
  // namespace, imported modules and live refs into `response.snapshot`
  // without changing the session (snapshot.py); what cannot be pickled is
  // left out and listed. A state past max_bytes is a RESOURCE_EXHAUSTED
  // failure. `restore` (REQUIRES: a fresh bound session) loads such a state,
  // refs under their ids, then runs the session's __pyexec_restore__() if
  // it defines one: an exception from it is `response.error` with the state
  // restored all the same. A state that is not a snapshot or does not
  // unpickle is an INVALID_ARGUMENT failure (FAILED_PRECONDITION when
  // another Python version made it) and leaves the namespace as it was.
  void Handle(const internal::WorkerRequest& request,
              internal::WorkerResponse* response);

  // Version string of the embedded interpreter.
  static const char* PythonVersion();

 private:
  // Sends one partial response carrying a chunk of output (kind 1 stdout, 2
  // stderr). Called by the Python Streamer, with the GIL held.
  bool SendText(int kind, PyObject* text);
  friend PyObject* EmitText(PyObject* self, PyObject* args);
  // pyexec.call(name, *args, **kwargs): asks the client, through pyexecd,
  // to run its function `name`, and waits for the answer, running nested
  // calls meanwhile. GIL held; a new reference, or null with an exception.
  PyObject* CallClient(PyObject* name, PyObject* args, PyObject* kwargs);
  friend PyObject* CallClientNative(PyObject* self, PyObject* args);

  // A request being handled (nested requests above the outer one).
  struct Active {
    uint64_t id;
    bool callbacks;
    absl::Time deadline;      // when a callback stops waiting for the client
    class RefTable* refs;     // the session's refs; null for stateless calls
  };
  // Sends one partial response (GIL held; released while writing).
  bool SendPartial(internal::WorkerResponse* partial);
  // Sends a frame as it is (GIL held; released while writing).
  bool SendUnlocked(const internal::WorkerResponse& frame);
  // The same for pyexec.call, which sets OSError when the socket is closed.
  bool SendFromCallback(const internal::WorkerResponse& frame);

  const RunnerLimits limits_;
  FrameSender send_;
  FrameReceiver receive_;
  std::vector<Active> active_;
  // Numbers the callbacks of this worker.
  uint32_t callback_seq_ = 0;
  // Several threads of one call may wait in pyexec.call at once. One of them
  // at a time reads the socket (callback_reading_): a frame read half by one
  // thread and half by another would break the framing. The reader keeps the
  // answers that belong to the others in callback_answers_, for as long as
  // their callers wait (callback_waiting_); an answer to a callback that gave
  // up is dropped. Its own mutex, never held while taking the GIL: waiters
  // release the GIL before they block on it.
  absl::Mutex callback_mu_;
  bool callback_reading_ ABSL_GUARDED_BY(callback_mu_) = false;
  absl::flat_hash_set<uint32_t> callback_waiting_ ABSL_GUARDED_BY(callback_mu_);
  absl::flat_hash_map<uint32_t, internal::CallbackAnswer> callback_answers_
      ABSL_GUARDED_BY(callback_mu_);
  // Turns a client's answer into pyexec.call's result, or sets its error.
  PyObject* CallbackResult(const internal::CallbackAnswer& answer, const Active& call);
  // The live refs of this worker's session.
  std::unique_ptr<class RefTable> refs_;
  // The id of the request running now, for its partial responses.
  uint64_t current_id_ = 0;
  // Python's handles on SendText and CallClient (builtin functions bound to
  // this runner).
  PyObject* emit_ = nullptr;
  PyObject* call_client_ = nullptr;
  // Borrowed from the helper module, alive for the process lifetime.
  struct Helpers* helpers_ = nullptr;
};

}  // namespace pyexec

#endif  // PYEXEC_WORKER_PYTHON_RUNNER_H_
