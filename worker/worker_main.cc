// pyexec_worker: one embedded CPython interpreter serving framed requests
// from pyexecd over a Unix socket, one at a time.
//
// Started by pyexecd, never by hand, in one of two ways:
// - spawned (--launcher=spawn): one process per worker, initialising its own
//   CPython, serving the socket inherited as --socket_fd;
// - as the zygote (--zygote): a single-threaded template that initialises
//   CPython once, imports the --preload modules, runs --preload_file, then
//   forks one worker per request that pyexecd sends on --control_fd (see
//   common/zygote_protocol.h for the protocol). Forked workers share the zygote's memory
//   copy-on-write and are ready in about a millisecond.
//
// Either way a worker leads its own process group and exits when its socket
// closes. Its whole group (the worker and what user code started) is killed
// when pyexecd exits, so that nothing outlives pyexecd even when pyexecd is
// SIGKILLed and the worker is busy: by a watchdog thread in a spawned
// worker, and by the zygote's WorkerGuard for forked ones.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/frame.h"
#include "common/limits.h"
#include "common/logging.h"
#include "common/procfs.h"
#include "common/zygote_protocol.h"
#include "pyexec/v1/worker.pb.h"
#include "worker/py_ref.h"
#include "worker/confinement.h"
#include "worker/python_runner.h"
#include "worker/worker_guard.h"

ABSL_FLAG(int, socket_fd, 3, "Inherited socket connected to pyexecd.");
ABSL_FLAG(int, parent_pid, 0,
          "pid of pyexecd; the worker (or zygote) watches it through a pidfd "
          "and exits at once if its parent differs (pyexecd already died).");
ABSL_FLAG(bool, zygote, false,
          "Run as the zygote: fork workers on requests from --control_fd.");
ABSL_FLAG(int, control_fd, 3, "Zygote: inherited control socket.");
ABSL_FLAG(std::string, preload, "",
          "Zygote: comma-separated modules to import once for all workers.");
ABSL_FLAG(std::string, preload_file, "",
          "Zygote: Python file run once in __main__ before any fork.");
ABSL_FLAG(uint64_t, max_output_bytes, pyexec::kDefaultMaxOutputBytes,
          "Captured stdout and stderr per call, each.");
ABSL_FLAG(int, max_value_depth, pyexec::kDefaultMaxValueDepth,
          "Container nesting limit of Values.");
ABSL_FLAG(uint64_t, max_frame_bytes, pyexec::kDefaultMaxFrameBytes,
          "Largest request frame.");
ABSL_FLAG(uint64_t, max_response_bytes, pyexec::kDefaultMaxMessageBytes,
          "Largest response; a bigger result is refused with "
          "RESOURCE_EXHAUSTED and the worker lives on.");
ABSL_FLAG(uint64_t, memory_limit_mb, 0,
          "Address-space limit (RLIMIT_AS) in MiB; 0 = none.");
ABSL_FLAG(uint64_t, max_open_files, 0, "RLIMIT_NOFILE; 0 = inherited.");
// Confinement (ConfinementOptions); pyexecd passes all of them. The zygote
// applies none to itself: each forked worker confines itself.
ABSL_FLAG(int64_t, uid, -1, "Run as this uid when started as root; -1 = keep.");
ABSL_FLAG(int64_t, gid, -1, "Run as this gid when started as root; -1 = keep.");
ABSL_FLAG(uint64_t, max_processes, 0, "RLIMIT_NPROC; 0 = inherited.");
ABSL_FLAG(uint64_t, cpu_seconds, 0, "RLIMIT_CPU in seconds; 0 = none.");
ABSL_FLAG(uint64_t, max_file_bytes, 0, "RLIMIT_FSIZE in bytes; 0 = none.");
ABSL_FLAG(bool, seccomp, true, "Install the seccomp filter.");
ABSL_FLAG(std::string, network, "host", "host, or none: an empty network namespace.");
ABSL_FLAG(std::string, private_dir, "",
          "Private directory: HOME, TMPDIR and working directory (spawned "
          "workers; the zygote gets one per fork request).");

namespace pyexec {
namespace {

// The command line's memory (argv[0] to the end of the last argument), which
// /proc/PID/cmdline and ps show. A forked worker overwrites it, or it would
// show the zygote's "--zygote" arguments.
char* g_cmdline = nullptr;
size_t g_cmdline_size = 0;

void RememberCommandLine(int argc, char** argv) {
  if (argc < 1) return;
  g_cmdline = argv[0];
  g_cmdline_size = static_cast<size_t>(argv[argc - 1] + strlen(argv[argc - 1]) - argv[0]);
}

// Makes ps show `text` (cut to fit) as this process's command line.
void SetCommandLine(absl::string_view text) {
  if (g_cmdline == nullptr || g_cmdline_size == 0) return;
  const size_t n = std::min(text.size(), g_cmdline_size);
  memcpy(g_cmdline, text.data(), n);
  memset(g_cmdline + n, 0, g_cmdline_size - n);
}

// Applies the per-worker OS limits. A spawned worker applies them before
// Python allocates anything; a forked one right after the fork (the zygote
// itself is not limited, so that one runaway session cannot starve it).
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
// process group. Only when the worker leads its group (as the launchers
// arrange): a worker started by hand must not kill whoever started it.
void KillOwnProcessGroup() {
  if (getpgrp() == getpid()) kill(0, SIGKILL);
}

// A pidfd of pyexecd, opened while pyexecd is certainly our parent (the
// ppid check after pidfd_open closes the race where it died first). -1 when
// there is no parent to watch (started by hand); -2 if pyexecd is gone.
int OpenParentPidfd(int parent) {
  if (parent == 0) return -1;
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, parent, 0));
  if (pidfd < 0 || getppid() != parent) return -2;
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  return pidfd;
}

// Ties a spawned worker's process group to pyexecd's life. A thread (not
// Python; unaffected by what user code does with signals) waits on the pidfd
// and then kills the whole group. (Forked workers have the zygote's
// WorkerGuard instead.)
void StartParentWatchdog(int pidfd) {
  if (pidfd < 0) return;
  std::thread([pidfd] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    pollfd p{pidfd, POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    KillOwnProcessGroup();
    _exit(1);
  }).detach();
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

// The confinement flags, with `private_dir`. Exits on a bad --network.
ConfinementOptions ConfinementFromFlags(const std::string& private_dir) {
  ConfinementOptions confinement;
  confinement.uid = absl::GetFlag(FLAGS_uid);
  confinement.gid = absl::GetFlag(FLAGS_gid);
  confinement.max_processes = absl::GetFlag(FLAGS_max_processes);
  confinement.cpu_seconds = absl::GetFlag(FLAGS_cpu_seconds);
  confinement.max_file_bytes = absl::GetFlag(FLAGS_max_file_bytes);
  confinement.seccomp = absl::GetFlag(FLAGS_seccomp);
  confinement.private_dir = private_dir;
  if (!ParseWorkerNetwork(absl::GetFlag(FLAGS_network), &confinement.network)) {
    LogError("worker: --network must be host or none");
    _exit(7);
  }
  return confinement;
}

RunnerLimits LimitsFromFlags() {
  RunnerLimits limits;
  limits.max_output_bytes = absl::GetFlag(FLAGS_max_output_bytes);
  limits.max_value_depth = absl::GetFlag(FLAGS_max_value_depth);
  limits.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  return limits;
}

// Runs one throwaway call. In the zygote it pays, once, the first call's
// lazy set-up (imports and caches inside the runner: about 1.3 ms of CPU and
// 0.4 MiB of private memory per worker when each worker paid it). In a
// worker, before hello, it takes the copy-on-write faults that any first
// call causes, while the worker is still a spare, not in a session's first
// call.
void WarmUp(PythonRunner& runner) {
  internal::WorkerRequest warm;
  warm.mutable_eval()->set_code("None");
  warm.set_fresh_namespace(true);
  internal::WorkerResponse ignored;
  runner.Handle(warm, &ignored);
}

// Says hello, then serves requests on `fd` until pyexecd closes it.
int Serve(int fd, PythonRunner& runner) {
  const size_t max_frame = absl::GetFlag(FLAGS_max_frame_bytes);
  const size_t max_response = absl::GetFlag(FLAGS_max_response_bytes);
  // Programs that user code starts must not inherit the socket.
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  // Partial responses (streamed calls) come from the main thread and from
  // the runner's output flusher thread: one frame at a time. A blocking
  // write is the backpressure: pyexecd stops reading while a client is slow.
  std::mutex write_mu;
  auto send = [fd, &write_mu](const internal::WorkerResponse& frame) {
    std::lock_guard<std::mutex> lock(write_mu);
    return WriteFrame(fd, frame).ok();
  };
  runner.SetFrameSender(send);

  WarmUp(runner);
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
    if (!send(response)) return 6;
  }
}

// Spawned worker: its own CPython, the inherited socket.
int RunSpawned() {
  int pidfd = OpenParentPidfd(absl::GetFlag(FLAGS_parent_pid));
  if (pidfd == -2) return 1;
  StartParentWatchdog(pidfd);
  // Start with a clean signal mask whatever the spawner had.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  ApplyLimits();
  // Confined before Python starts, so that the interpreter itself (and
  // os.environ, which it copies at start-up) sees the final user, HOME and
  // TMPDIR; the parent watchdog thread gets the seccomp filter too.
  if (absl::Status s =
          ConfineWorker(ConfinementFromFlags(absl::GetFlag(FLAGS_private_dir)));
      !s.ok()) {
    LogError(absl::StrCat("worker: cannot confine: ", s.message()));
    return 7;
  }
  PythonRunner runner(LimitsFromFlags());
  if (absl::Status s = runner.Initialize(); !s.ok()) {
    LogError(absl::StrCat("worker: ", s.message()));
    return 2;
  }
  return Serve(absl::GetFlag(FLAGS_socket_fd), runner);
}

// Imports --preload and runs --preload_file in __main__. On failure returns
// the formatted traceback.
absl::Status Preload() {
  std::string script = "import importlib, sys, traceback\n";
  for (absl::string_view module :
       absl::StrSplit(absl::GetFlag(FLAGS_preload), ',', absl::SkipWhitespace())) {
    absl::StrAppend(&script, "importlib.import_module(", "'",
                    absl::StripAsciiWhitespace(module), "')\n");
  }
  std::string file = absl::GetFlag(FLAGS_preload_file);
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  PyObject* globals = PyModule_GetDict(main);       // borrowed
  PyRef path(PyUnicode_FromString(file.c_str()));
  PyDict_SetItemString(globals, "_pyexec_preload_file", path.get());
  absl::StrAppend(
      &script,
      "if _pyexec_preload_file:\n"
      "    with open(_pyexec_preload_file, encoding='utf-8') as f:\n"
      "        exec(compile(f.read(), _pyexec_preload_file, 'exec'), "
      "sys.modules['__main__'].__dict__)\n");
  PyRef result(PyRun_String(script.c_str(), Py_file_input, globals, globals));
  PyDict_DelItemString(globals, "_pyexec_preload_file");
  if (result) return absl::OkStatus();
  // Format the traceback as Python would print it.
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  PyRef owned_type(type), owned_value(value), owned_tb(tb);
  std::string text = "preload failed";
  PyRef module(PyImport_ImportModule("traceback"));
  PyRef lines(module ? PyObject_CallMethod(module.get(), "format_exception",
                                           "OOO", type, value ? value : Py_None,
                                           tb ? tb : Py_None)
                     : nullptr);
  PyRef empty(PyUnicode_FromString(""));
  PyRef joined(lines ? PyUnicode_Join(empty.get(), lines.get()) : nullptr);
  if (joined) {
    const char* utf8 = PyUnicode_AsUTF8(joined.get());
    if (utf8 != nullptr) text = utf8;
  }
  PyErr_Clear();
  // importlib.import_module is not part of the user's story.
  return absl::FailedPreconditionError(text);
}

// Threads of this process (the kernel's count, Python's or not); -1 if
// /proc does not say.
int ThreadCount() {
  for (absl::string_view line :
       absl::StrSplit(ReadProcFile("/proc/self/status"), '\n')) {
    int threads;
    if (absl::ConsumePrefix(&line, "Threads:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &threads)) {
      return threads;
    }
  }
  return -1;
}

// How the zygote's workers get the seccomp filter.
struct WorkerSeccomp {
  // Compiled once in the zygote, for workers to install.
  std::optional<SeccompFilter> filter;
  // The zygote runs under the filter itself, so that every worker inherits
  // it at fork and installs nothing: the kernel checks and translates a
  // filter on each seccomp() call, about 0.25 ms of CPU per worker. Only
  // with --network=host: a worker that must still unshare its network
  // namespace (which the filter refuses) installs the filter after that.
  bool inherited = false;
};

// The zygote's forked worker. Never returns.
[[noreturn]] void RunForked(int socket, PythonRunner& runner,
                            const std::string& private_dir,
                            const ConfinementOptions& forked_confinement) {
  // A new process group, so that Kill() of this worker also ends what its
  // user code starts, and not its siblings. pyexecd does the same when the
  // zygote replies, whichever runs first; under a filter inherited from the
  // zygote this call is refused, and pyexecd's is the one.
  setpgid(0, 0);
  // No watchdog thread: the zygote's WorkerGuard kills this worker's group
  // if pyexecd dies.
  ApplyLimits();
  // The zygote may run as root: the worker drops to the worker user (and
  // gets its filter, namespace and private directory) itself, before any
  // user code runs.
  ConfinementOptions confinement = forked_confinement;
  confinement.private_dir = private_dir;
  if (absl::Status s = ConfineWorker(confinement); !s.ok()) {
    LogError(absl::StrCat("worker: cannot confine: ", s.message()));
    KillOwnProcessGroup();
    _exit(7);
  }
  if (absl::Status s = runner.AfterFork(private_dir); !s.ok()) {
    LogError(absl::StrCat("worker: ", s.message()));
    KillOwnProcessGroup();
    _exit(2);
  }
  int code = Serve(socket, runner);
  KillOwnProcessGroup();
  _exit(code);
}

// Forks one worker for `socket` and returns its pid, or -errno.
//
// clone(CLONE_PARENT) makes the worker pyexecd's child, not the zygote's:
// pyexecd waitpid()s it like a spawned worker, and it carries on if the
// zygote dies. This is one fork per worker; a double fork through an
// intermediate process (that then exits, re-parenting the worker) was the
// first design and cost a second page-table copy and teardown, about half of
// a worker's creation on the 2-core machine.
//
// A raw clone skips glibc's fork handlers. That is safe here: the zygote
// has a single thread, so no lock glibc resets in a forked child (malloc,
// stdio, the loader's) can be held, and glibc (>= 2.34) asks the kernel for
// the thread id where it matters (raise, pthread_kill of the calling
// thread). Python's own fork handling runs through PyOS_BeforeFork /
// PyOS_AfterFork_*. pyexecd makes the worker lead its own process group
// (setpgid(pid, pid) on the reply: a parent may), because under the filter
// inherited from the zygote the worker cannot.
pid_t ForkWorker(int socket, const std::string& private_dir, int control,
                 int parent_pidfd, PythonRunner& runner,
                 const ConfinementOptions& forked_confinement, WorkerGuard& guard) {
  PyOS_BeforeFork();
  const uint64_t before = WorkerGuard::BootTicksNow();
  long worker = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr,
                        nullptr, nullptr);
  if (worker == 0) {
    // First: the worker is pyexecd's child from the start, like the zygote,
    // and should hardly ever be seen there under the zygote's name.
    prctl(PR_SET_NAME, "pyexec_worker");
    SetCommandLine("pyexec_worker (forked by the zygote)");
    // The frame socket takes fd 3 (the control socket's number in the
    // zygote), as in a spawned worker.
    if (socket != 3) {
      dup2(socket, 3);
      close(socket);
    }
    if (control != 3) close(control);
    if (parent_pidfd >= 0) close(parent_pidfd);
    PyOS_AfterFork_Child();
    RunForked(3, runner, private_dir, forked_confinement);
  }
  int saved_errno = errno;
  if (worker > 0) {
    guard.Add(static_cast<pid_t>(worker), before, WorkerGuard::BootTicksNow());
  }
  PyOS_AfterFork_Parent();
  return worker > 0 ? static_cast<pid_t>(worker) : -saved_errno;
}

// The control socket failed or closed: either pyexecd is restarting the
// zygote, and kills it right after closing the socket, or pyexecd is gone,
// and then the zygote kills the workers it guards. Which one is told by
// pyexecd's pidfd; the socket's EOF can come a moment before the pidfd turns
// readable, hence the wait.
void GuardAfterControlClosed(int parent_pidfd, WorkerGuard& guard) {
  if (parent_pidfd < 0) return;  // started by hand: nothing to guard against
  pollfd p{parent_pidfd, POLLIN, 0};
  int ready;
  while ((ready = poll(&p, 1, 10000)) < 0 && errno == EINTR) {
  }
  if (ready <= 0) return;
  int killed = guard.KillAll();
  LogInfo(absl::StrCat("zygote: pyexecd is gone; killed ", killed, " worker(s)"));
}

// The zygote: pyexecd sends a ZygoteRequest with one socket end attached
// (SCM_RIGHTS); the zygote forks a worker serving it and answers a
// ZygoteReply with its pid. Single-threaded: fork() copies only the calling
// thread, so the zygote must never have had another.
int RunZygote() {
  // pyexecd sets it for the zygote only (ZygoteWorkerLauncher); the dynamic
  // linker has read it by now and keeps binding eagerly, also for modules
  // loaded later.
  unsetenv("LD_BIND_NOW");
  // Tells the zygote from its workers in ps and /proc/PID/comm (they share
  // its command line).
  prctl(PR_SET_NAME, "pyexec_zygote");
  const int control = absl::GetFlag(FLAGS_control_fd);
  fcntl(control, F_SETFD, FD_CLOEXEC);
  int parent_pidfd = OpenParentPidfd(absl::GetFlag(FLAGS_parent_pid));
  if (parent_pidfd == -2) return 1;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  // The workers of a zygote that died before us are ours to guard too:
  // taken over first thing, so that a pyexecd killed while this zygote
  // starts up still takes them down (see GuardAfterControlClosed below).
  WorkerGuard guard;
  if (parent_pidfd >= 0) {
    if (int adopted = guard.AdoptChildrenOf(absl::GetFlag(FLAGS_parent_pid), getpid());
        adopted > 0) {
      LogInfo(absl::StrCat("zygote: guarding ", adopted, " worker(s) of an earlier zygote"));
    }
  }

  WorkerSeccomp seccomp;
  absl::Status ready;
  if (absl::GetFlag(FLAGS_seccomp)) {
    absl::StatusOr<SeccompFilter> compiled = SeccompFilter::Compile();
    if (compiled.ok()) {
      seccomp.filter = *std::move(compiled);
    } else {
      ready = compiled.status();
    }
  }
  PythonRunner runner(LimitsFromFlags());
  if (ready.ok()) ready = runner.Initialize();
  if (ready.ok()) ready = Preload();
  if (ready.ok()) {
    WarmUp(runner);
    // Moves everything the zygote allocated into the GC's permanent
    // generation: a worker's collections then never write to those objects'
    // headers, so their pages stay shared instead of being copied on the
    // first collection after the fork.
    PyRun_SimpleString("import gc\ngc.collect()\ngc.freeze()\n");
    // fork() copies only the calling thread: a lock that another thread
    // holds at that moment stays locked forever in the worker.
    if (int threads = ThreadCount(); threads > 1) {
      ready = absl::FailedPreconditionError(absl::StrCat(
          "the preloads left ", threads - 1, " thread(s) running in the zygote, "
          "which must stay single-threaded to fork workers safely; start "
          "threads in sessions instead, or stop them at the end of "
          "--preload_file"));
    } else {
      ready = runner.BeforeForks();
    }
  }
  // Each forked worker's confinement, but for its private directory: read
  // from the flags once here, not in every worker (a string flag's read
  // takes a lock and allocates, and each write there is a copied page).
  ConfinementOptions forked_confinement = ConfinementFromFlags("");
  if (ready.ok() && seccomp.filter &&
      forked_confinement.network == WorkerNetwork::kHost) {
    // After the preloads (the operator's code, trusted, and not to be
    // surprised by EPERM), before any worker exists.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      ready = absl::InternalError(absl::StrCat("PR_SET_NO_NEW_PRIVS: ", strerror(errno)));
    } else {
      ready = seccomp.filter->Install();
      seccomp.inherited = ready.ok();
    }
  }
  if (!WriteZygoteReady(control, ready).ok()) {
    GuardAfterControlClosed(parent_pidfd, guard);
    return 2;
  }
  if (!ready.ok()) return 2;  // pyexecd reports it and stops
  if (seccomp.inherited) {
    forked_confinement.seccomp = false;  // on since the fork
  } else if (seccomp.filter) {
    forked_confinement.compiled_seccomp = &*seccomp.filter;
  }
  while (true) {
    absl::StatusOr<ZygoteRequest> request = ReceiveZygoteRequest(control);
    if (!request.ok()) {
      GuardAfterControlClosed(parent_pidfd, guard);
      return request.status().code() == absl::StatusCode::kCancelled ? 0 : 4;
    }
    pid_t pid = ForkWorker(request->socket.get(), request->private_dir, control,
                           parent_pidfd, runner, forked_confinement, guard);
    if (!WriteZygoteReply(control, pid).ok()) {
      GuardAfterControlClosed(parent_pidfd, guard);
      return 5;
    }
  }
}

}  // namespace
}  // namespace pyexec

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: each lock then updates one global graph, and in a forked
  // worker each of those writes is a copied page. (As in pyexecd.)
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  pyexec::SetLogProgramName("pyexec_worker");
  pyexec::RememberCommandLine(argc, argv);
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_zygote)) return pyexec::RunZygote();
  int code = pyexec::RunSpawned();
  // The socket closed (pyexecd is gone or let us go) or failed. The watchdog
  // may not have run yet: take user code's processes down with us now.
  pyexec::KillOwnProcessGroup();
  return code;
}
