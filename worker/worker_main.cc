// pyexec_worker: one embedded CPython interpreter serving framed requests
// from pyexecd over an inherited Unix socket, one at a time.
//
// It is started by ProcessWorkerLauncher, never by hand. It exits when the
// socket closes, and a watchdog thread kills its whole process group (the
// worker and whatever user code started) when pyexecd exits, so that nothing
// outlives pyexecd even when pyexecd is SIGKILLed.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <thread>

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/frame.h"
#include "common/limits.h"
#include "worker/confinement.h"
#include "worker/python_runner.h"
#include "pyexec/v1/worker.pb.h"

ABSL_FLAG(int, socket_fd, 3, "Inherited socket connected to pyexecd.");
ABSL_FLAG(int, parent_pid, 0,
          "pid of pyexecd; the worker exits at once if its parent differs "
          "(the parent died before PR_SET_PDEATHSIG took effect).");
ABSL_FLAG(uint64_t, max_output_bytes, pyexec::kDefaultMaxOutputBytes,
          "Captured stdout and stderr per call, each.");
ABSL_FLAG(int, max_value_depth, pyexec::kDefaultMaxValueDepth, "Container nesting limit of Values.");
ABSL_FLAG(uint64_t, max_frame_bytes, pyexec::kDefaultMaxFrameBytes, "Largest request frame.");
ABSL_FLAG(uint64_t, max_response_bytes, pyexec::kDefaultMaxMessageBytes,
          "Largest response; a bigger result is refused with "
          "RESOURCE_EXHAUSTED and the worker lives on.");
ABSL_FLAG(uint64_t, memory_limit_mb, 0,
          "Address-space limit (RLIMIT_AS) in MiB; 0 = none.");
ABSL_FLAG(uint64_t, max_open_files, 0, "RLIMIT_NOFILE; 0 = inherited.");
// Confinement (ConfinementOptions); pyexecd passes all of them.
ABSL_FLAG(int64_t, uid, -1, "Run as this uid when started as root; -1 = keep.");
ABSL_FLAG(int64_t, gid, -1, "Run as this gid when started as root; -1 = keep.");
ABSL_FLAG(uint64_t, max_processes, 0, "RLIMIT_NPROC; 0 = inherited.");
ABSL_FLAG(uint64_t, cpu_seconds, 0, "RLIMIT_CPU in seconds; 0 = none.");
ABSL_FLAG(uint64_t, max_file_bytes, 0, "RLIMIT_FSIZE in bytes; 0 = none.");
ABSL_FLAG(bool, seccomp, true, "Install the seccomp filter.");
ABSL_FLAG(std::string, network, "host", "host, or none: an empty network namespace.");
ABSL_FLAG(std::string, private_dir, "",
          "Private directory: HOME, TMPDIR and working directory.");

namespace pyexec {
namespace {

// Applies the per-worker OS limits before Python allocates anything.
void ApplyLimits() {
  if (uint64_t mb = absl::GetFlag(FLAGS_memory_limit_mb); mb > 0) {
    rlimit limit{mb << 20, mb << 20};
    if (setrlimit(RLIMIT_AS, &limit) != 0) LogWarning("setrlimit(RLIMIT_AS) failed");
  }
  if (uint64_t n = absl::GetFlag(FLAGS_max_open_files); n > 0) {
    rlimit limit{n, n};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      LogWarning("setrlimit(RLIMIT_NOFILE) failed");
    }
  }
}

// Ends the worker together with every process user code started in its
// process group. Only when the worker leads its group (as the launcher
// arranges): a worker started by hand must not kill whoever started it.
void KillOwnProcessGroup() {
  if (getpgrp() == getpid()) kill(0, SIGKILL);
}

// Ties the worker's process group to pyexecd's life. PR_SET_PDEATHSIG alone
// would kill only the worker and leave the programs user code started
// running, so a thread (not Python; unaffected by what user code does with
// signals) waits on a pidfd of the parent and then kills the whole group.
// Returns false if the parent is already gone.
bool WatchParent(int parent) {
  if (parent == 0) return true;
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, parent, 0));
  if (pidfd < 0) {
    // No pidfd: fall back to dying alone with the parent.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    return getppid() == parent;
  }
  // The ppid check after pidfd_open closes the race where the parent died
  // before we started watching it.
  if (getppid() != parent) return false;
  std::thread([pidfd] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    pollfd p{pidfd, POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    KillOwnProcessGroup();
  }).detach();
  return true;
}

// Replaces a response too big for gRPC with a failure, so that the worker
// and its session survive an oversized result.
void CapResponse(size_t max_bytes, internal::WorkerResponse* response) {
  size_t size = response->ByteSizeLong();
  if (size <= max_bytes) return;
  uint64_t id = response->id();
  response->Clear();
  response->set_id(id);
  response->mutable_failure()->set_code(
      static_cast<int>(absl::StatusCode::kResourceExhausted));
  response->mutable_failure()->set_message(absl::StrCat(
      "the result is ", size, " bytes, more than --max_message_bytes (",
      max_bytes, "); the session is intact"));
}

int Serve() {
  const int fd = absl::GetFlag(FLAGS_socket_fd);
  const size_t max_frame = absl::GetFlag(FLAGS_max_frame_bytes);
  const size_t max_response = absl::GetFlag(FLAGS_max_response_bytes);

  if (!WatchParent(absl::GetFlag(FLAGS_parent_pid))) return 1;
  // Programs that user code starts must not inherit the control socket.
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  // The launcher blocks every signal around spawning; start clean.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  ApplyLimits();

  // Confined before Python starts, so that the interpreter itself (and
  // os.environ, which it copies at start-up) sees the final user, HOME and
  // TMPDIR; the parent watchdog thread gets the seccomp filter too.
  ConfinementOptions confinement;
  confinement.uid = absl::GetFlag(FLAGS_uid);
  confinement.gid = absl::GetFlag(FLAGS_gid);
  confinement.max_processes = absl::GetFlag(FLAGS_max_processes);
  confinement.cpu_seconds = absl::GetFlag(FLAGS_cpu_seconds);
  confinement.max_file_bytes = absl::GetFlag(FLAGS_max_file_bytes);
  confinement.seccomp = absl::GetFlag(FLAGS_seccomp);
  confinement.private_dir = absl::GetFlag(FLAGS_private_dir);
  if (!ParseWorkerNetwork(absl::GetFlag(FLAGS_network), &confinement.network)) {
    LogError("worker: --network must be host or none");
    return 7;
  }
  if (absl::Status s = ConfineWorker(confinement); !s.ok()) {
    LogError(absl::StrCat("worker: cannot confine: ", s.message()));
    return 7;
  }

  RunnerLimits limits;
  limits.max_output_bytes = absl::GetFlag(FLAGS_max_output_bytes);
  limits.max_value_depth = absl::GetFlag(FLAGS_max_value_depth);
  PythonRunner runner(limits);
  if (absl::Status s = runner.Initialize(); !s.ok()) {
    LogError(absl::StrCat("worker: ", s.message()));
    return 2;
  }

  internal::WorkerResponse hello;
  hello.mutable_hello()->set_pid(getpid());
  hello.mutable_hello()->set_python_version(PythonRunner::PythonVersion());
  if (!WriteFrame(fd, hello).ok()) return 3;

  std::string payload;
  internal::WorkerRequest request;
  internal::WorkerResponse response;
  while (true) {
    absl::StatusOr<bool> got;
    // Let Python threads that user code started run while we wait.
    Py_BEGIN_ALLOW_THREADS
    got = ReadFrame(fd, max_frame, &payload);
    Py_END_ALLOW_THREADS
    if (!got.ok()) {
      LogError(absl::StrCat("worker: ", got.status().message()));
      return 4;
    }
    if (!*got) return 0;  // pyexecd closed the socket: we are done.
    request.Clear();
    response.Clear();
    if (!ParseFramePayload(payload, &request)) {
      // The server already checked the request; this is a protocol fault.
      LogError("worker: request frame does not parse");
      return 5;
    }
    runner.Handle(request, &response);
    CapResponse(max_response, &response);
    if (!WriteFrame(fd, response).ok()) return 6;
  }
}

}  // namespace
}  // namespace pyexec

int main(int argc, char** argv) {
  pyexec::SetLogProgramName("pyexec_worker");
  absl::ParseCommandLine(argc, argv);
  int code = pyexec::Serve();
  // The socket closed (pyexecd is gone or let us go) or failed. The watchdog
  // may not have run yet: take user code's processes down with us now.
  pyexec::KillOwnProcessGroup();
  return code;
}
