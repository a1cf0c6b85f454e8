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
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <limits.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
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
#include "worker/worker_settings.h"
#include "worker/zygote_heap.h"

ABSL_FLAG(int, socket_fd, 3, "Inherited socket connected to pyexecd.");
ABSL_FLAG(int, parent_pid, 0,
          "pid of pyexecd; the worker (or zygote) watches it through a pidfd "
          "and exits at once if its parent differs (pyexecd already died).");
ABSL_FLAG(bool, zygote, false,
          "Run as the zygote: fork workers on requests from --control_fd.");
ABSL_FLAG(int, control_fd, 3, "Zygote: inherited control socket.");
ABSL_FLAG(int, settings_fd, -1,
          "Inherited descriptor to read one serialized WorkerSettings from "
          "(limits, confinement, preloads); -1: the defaults.");

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

// The settings pyexecd passed on --settings_fd, or the defaults of a worker
// started by hand. Exits when they cannot be read.
internal::WorkerSettings ReadSettings() {
  internal::WorkerSettings settings = DefaultWorkerSettings();
  const int fd = absl::GetFlag(FLAGS_settings_fd);
  if (fd < 0) return settings;
  std::string data;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      LogError(absl::StrCat("worker: reading --settings_fd: ", strerror(errno)));
      _exit(7);
    }
    data.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  if (!settings.ParseFromString(data)) {
    LogError("worker: the settings do not parse");
    _exit(7);
  }
  return settings;
}

RunnerLimits LimitsOf(const internal::WorkerSettings& settings) {
  RunnerLimits limits;
  limits.max_output_bytes = settings.max_output_bytes();
  limits.max_value_depth = settings.max_value_depth();
  limits.max_response_bytes = settings.max_response_bytes();
  return limits;
}

// Whether a Landlock rule on `path` would reach one of `forbidden`: the
// path itself, anything below it, or anything above it.
bool CoversForbidden(const std::string& path,
                     const google::protobuf::RepeatedPtrField<std::string>& forbidden) {
  auto beneath = [](absl::string_view inner, absl::string_view outer) {
    if (outer == "/") return true;
    return inner == outer ||
           (absl::StartsWith(inner, outer) && inner[outer.size()] == '/');
  };
  for (const std::string& f : forbidden) {
    if (beneath(path, f) || beneath(f, path)) return true;
  }
  return false;
}

// The directories Python may still import from after the worker is
// restricted, beyond the system paths: the entries of sys.path, the
// packages the preloads came from, and PYTHONPATH for a spawned worker
// (whose Python starts after the restriction). Entries that would open up
// pyexecd's secrets or other sessions' directories are left out and
// logged. Relative entries (the working directory) never count.
std::vector<std::string> PythonReadPaths(const std::vector<std::string>& candidates,
                                         const ConfinementOptions& confinement) {
  std::vector<std::string> out;
  for (const std::string& candidate : candidates) {
    if (candidate.empty() || candidate[0] != '/') continue;
    char resolved[PATH_MAX];
    if (realpath(candidate.c_str(), resolved) == nullptr) continue;
    std::string path(resolved);
    if (absl::StartsWith(path, "/usr/") || path == "/usr") continue;  // a system path
    if (CoversForbidden(path, confinement.forbidden_paths())) {
      LogWarning(absl::StrCat("worker: Python path ", path,
                              " is not readable by sessions: it would expose "
                              "pyexecd's files or other sessions"));
      continue;
    }
    if (std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
  }
  return out;
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
// The socket to pyexecd, closed in every process user code forks (os.fork,
// multiprocessing): a child must neither answer calls on it nor keep it
// open after the worker dies, since its hang-up is how pyexecd learns of the
// worker's death.
int served_socket = -1;
void CloseServedSocketInChild() {
  if (served_socket >= 0) close(served_socket);
  served_socket = -1;
}

int Serve(int fd, PythonRunner& runner, const internal::WorkerSettings& settings) {
  served_socket = fd;
  static const int installed = pthread_atfork(nullptr, nullptr, CloseServedSocketInChild);
  (void)installed;
  const size_t max_frame = settings.max_frame_bytes();
  const size_t max_response = settings.max_response_bytes();
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
  // A callback's answer (and the calls made while the client runs it) come
  // on the same socket, read while the call waits.
  runner.SetFrameReceiver([fd, max_frame](absl::Time deadline) -> absl::StatusOr<std::string> {
    pollfd p{fd, POLLIN, 0};
    const int timeout_ms =
        deadline == absl::InfiniteFuture()
            ? -1
            : static_cast<int>(std::max<int64_t>(
                  0, absl::ToInt64Milliseconds(deadline - absl::Now() + absl::Microseconds(999))));
    int ready = poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) return absl::CancelledError("interrupted by a signal");
    if (ready < 0) return absl::UnavailableError(absl::StrCat("poll: ", strerror(errno)));
    if (ready == 0) return absl::DeadlineExceededError("no answer before the deadline");
    std::string payload;
    absl::StatusOr<bool> got = ReadFrame(fd, max_frame, &payload);
    if (!got.ok()) return got.status();
    if (!*got) return absl::UnavailableError("pyexecd closed the socket");
    return payload;
  });

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
      // pyexecd checks every request before it sends it, so this is a
      // protocol fault; the frame itself was read whole, so the stream is
      // intact: answer the call with an error and serve the next one.
      LogError("worker: a request frame does not parse");
      response.set_id(FrameRequestId(payload));
      response.mutable_failure()->set_code(
          static_cast<int>(absl::StatusCode::kInvalidArgument));
      response.mutable_failure()->set_message(
          "the worker could not read the request (malformed, or nested too "
          "deeply); the session is intact");
    } else if (request.op_case() == internal::WorkerRequest::kCallbackAnswer) {
      continue;  // the answer to a callback that gave up waiting: no call
    } else {
      const int64_t received = request.trace() ? MonotonicNanos() : 0;
      runner.Handle(request, &response);
      CapResponse(max_response, &response);
      if (request.trace()) {
        response.mutable_trace()->set_worker_received_ns(received);
        response.mutable_trace()->set_worker_sent_ns(MonotonicNanos());
      }
    }
    if (!send(response)) return 6;
  }
}

// Spawned worker: its own CPython, the inherited socket.
int RunSpawned(const internal::WorkerSettings& settings) {
  int pidfd = OpenParentPidfd(absl::GetFlag(FLAGS_parent_pid));
  if (pidfd == -2) return 1;
  StartParentWatchdog(pidfd);
  // Start with a clean signal mask whatever the spawner had.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Confined before Python starts, so that the interpreter itself (and
  // os.environ, which it copies at start-up) sees the final user, HOME and
  // TMPDIR; the parent watchdog thread gets the seccomp filter too.
  ConfinementOptions confinement = settings.confinement();
  confinement.add_protected_pids(getppid());
  if (const char* pythonpath = getenv("PYTHONPATH"); pythonpath != nullptr) {
    for (const std::string& path :
         PythonReadPaths(absl::StrSplit(pythonpath, ':'), confinement)) {
      confinement.add_read_paths(path);
    }
  }
  if (absl::Status s = ConfineWorker(confinement); !s.ok()) {
    LogError(absl::StrCat("worker: cannot confine: ", s.message()));
    return 7;
  }
  PythonRunner runner(LimitsOf(settings));
  if (absl::Status s = runner.Initialize(); !s.ok()) {
    LogError(absl::StrCat("worker: ", s.message()));
    return 2;
  }
  return Serve(absl::GetFlag(FLAGS_socket_fd), runner, settings);
}

// Imports the preloads and runs the preload file in __main__. On failure
// returns the formatted traceback.
absl::Status Preload(const internal::WorkerSettings& settings) {
  std::string script = "import importlib, sys, traceback\n";
  for (const std::string& module : settings.preload()) {
    absl::StrAppend(&script, "importlib.import_module(", "'",
                    absl::StripAsciiWhitespace(module), "')\n");
  }
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  PyObject* globals = PyModule_GetDict(main);       // borrowed
  PyRef path(PyUnicode_FromString(settings.preload_file().c_str()));
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

// Where the zygote's Python imports from: sys.path, and the directories of
// the packages and modules already imported from elsewhere (a preload
// loaded through a path hook, a namespace package).
std::vector<std::string> ZygotePythonPaths() {
  PyObject* main = PyImport_AddModule("__main__");  // borrowed
  PyObject* globals = PyModule_GetDict(main);       // borrowed
  PyRef found(PyRun_String(
      "(lambda sys, os: [p for p in sys.path if isinstance(p, str)] + "
      "[os.path.dirname(f) for f in (getattr(m, '__file__', None) for m in "
      "list(sys.modules.values())) if isinstance(f, str)])"
      "(__import__('sys'), __import__('os'))",
      Py_eval_input, globals, globals));
  std::vector<std::string> out;
  if (!found) {
    PyErr_Clear();
    return out;
  }
  for (Py_ssize_t i = 0; i < PyList_Size(found.get()); ++i) {
    const char* utf8 = PyUnicode_AsUTF8(PyList_GetItem(found.get(), i));
    if (utf8 != nullptr) out.emplace_back(utf8);
  }
  PyErr_Clear();
  return out;
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

// What the zygote prepares once for all its workers' confinement.
struct ForkedConfinement {
  // The options, but for each worker's private directory and uid.
  ConfinementOptions options;
  // Compiled once in the zygote, for workers to install.
  std::optional<SeccompFilter> filter;
  // The zygote runs under the filter itself, so that every worker inherits
  // it at fork and installs nothing (the kernel checks and translates a
  // filter on each seccomp() call). Not with network NONE: a worker that
  // must still unshare its network namespace (which the filter refuses)
  // installs the filter after that.
  bool inherited = false;
  // The Landlock rules with their paths opened once; each worker closes
  // its copies once restricted.
  LandlockRules landlock;
};

// The zygote's forked worker. Never returns.
[[noreturn]] void RunForked(int socket, PythonRunner& runner,
                            const internal::WorkerSettings& settings,
                            const ZygoteRequest& request,
                            ForkedConfinement& forked) {
  // A new process group, so that Kill() of this worker also ends what its
  // user code starts, and not its siblings. pyexecd does the same when the
  // zygote replies, whichever runs first; under a filter inherited from the
  // zygote this call is refused, and pyexecd's is the one.
  setpgid(0, 0);
  // No watchdog thread: the zygote's WorkerGuard kills this worker's group
  // if pyexecd dies.
  //
  // The zygote may run as root: the worker drops to its user (and gets its
  // filter, Landlock domain, namespace and private directory) itself,
  // before any user code runs.
  ConfinementOptions confinement = forked.options;
  confinement.set_private_dir(request.private_dir);
  if (request.uid >= 0) {
    confinement.set_switch_user(true);
    confinement.set_uid(static_cast<uint32_t>(request.uid));
    confinement.set_gid(static_cast<uint32_t>(request.gid));
  }
  ConfinementResources resources;
  resources.seccomp = forked.filter ? &*forked.filter : nullptr;
  resources.seccomp_inherited = forked.inherited;
  resources.landlock = &forked.landlock;
  absl::Status confined = ConfineWorker(confinement, resources);
  forked.landlock.Close();
  if (!confined.ok()) {
    LogError(absl::StrCat("worker: cannot confine: ", confined.message()));
    KillOwnProcessGroup();
    _exit(7);
  }
  if (absl::Status s = runner.AfterFork(request.private_dir); !s.ok()) {
    LogError(absl::StrCat("worker: ", s.message()));
    KillOwnProcessGroup();
    _exit(2);
  }
  int code = Serve(socket, runner, settings);
  KillOwnProcessGroup();
  _exit(code);
}

// Forks one worker for `request` and returns its pid, or -errno.
//
// clone(CLONE_PARENT) makes the worker pyexecd's child, not the zygote's:
// pyexecd waitpid()s it like a spawned worker, and it carries on if the
// zygote dies. One fork per worker: a double fork through an intermediate
// process would copy and tear down the page tables twice.
//
// A raw clone skips glibc's fork handlers. That is safe here: the zygote
// has a single thread, so no lock glibc resets in a forked child (malloc,
// stdio, the loader's) can be held, and glibc (>= 2.34) asks the kernel for
// the thread id where it matters (raise, pthread_kill of the calling
// thread). Python's own fork handling runs through PyOS_BeforeFork /
// PyOS_AfterFork_*. pyexecd makes the worker lead its own process group
// (setpgid(pid, pid) on the reply: a parent may), because under the filter
// inherited from the zygote the worker cannot.
pid_t ForkWorker(const ZygoteRequest& request, int control, int parent_pidfd,
                 PythonRunner& runner, const internal::WorkerSettings& settings,
                 ForkedConfinement& forked, WorkerGuard& guard) {
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
    const int socket = request.socket.get();
    if (socket != 3) {
      dup2(socket, 3);
      close(socket);
    }
    if (control != 3) close(control);
    if (parent_pidfd >= 0) close(parent_pidfd);
    RestoreMallocFastbins();
    PyOS_AfterFork_Child();
    RunForked(3, runner, settings, request, forked);
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

// Everything the zygote prepares for its workers' confinement, once the
// preloads ran (their paths are known then). With the host network or no
// inet sockets, the zygote also puts itself under the filter.
absl::Status PrepareForkedConfinement(const internal::WorkerSettings& settings,
                                      ForkedConfinement* forked) {
  forked->options = settings.confinement();
  forked->options.add_protected_pids(getppid());  // pyexecd
  forked->options.add_protected_pids(getpid());   // this zygote
  if (forked->options.landlock()) {
    std::vector<std::string> read(forked->options.read_paths().begin(),
                                  forked->options.read_paths().end());
    for (std::string& path : PythonReadPaths(ZygotePythonPaths(), forked->options)) {
      read.push_back(std::move(path));
    }
    absl::StatusOr<LandlockRules> rules =
        LandlockRules::ForWorkers(read, forked->options.ptys());
    if (!rules.ok()) return rules.status();
    forked->landlock = *std::move(rules);
  }
  if (!forked->options.seccomp()) return absl::OkStatus();
  absl::StatusOr<SeccompFilter> compiled = SeccompFilter::Compile(forked->options);
  if (!compiled.ok()) return compiled.status();
  forked->filter = *std::move(compiled);
  if (forked->options.network() == internal::Confinement::NONE) return absl::OkStatus();
  // After the preloads (the operator's code, trusted, and not to be
  // surprised by EPERM), before any worker exists.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return absl::InternalError(absl::StrCat("PR_SET_NO_NEW_PRIVS: ", strerror(errno)));
  }
  if (absl::Status s = forked->filter->Install(); !s.ok()) return s;
  forked->inherited = true;
  return absl::OkStatus();
}

// The zygote: pyexecd sends a ZygoteRequest with one socket end attached
// (SCM_RIGHTS); the zygote forks a worker serving it and answers a
// ZygoteReply with its pid. Single-threaded: fork() copies only the calling
// thread, so the zygote must never have had another.
int RunZygote(const internal::WorkerSettings& settings) {
  // pyexecd sets it for the zygote only (ZygoteWorkerLauncher); the dynamic
  // linker has read it by now and keeps binding eagerly, also for modules
  // loaded later.
  unsetenv("LD_BIND_NOW");
  // Tells the zygote from its workers in ps and /proc/PID/comm (they share
  // its command line).
  prctl(PR_SET_NAME, "pyexec_zygote");
  // Its /proc entries (environment, memory) stay closed to processes of
  // the same uid, which its workers may be.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
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

  PythonRunner runner(LimitsOf(settings));
  absl::Status ready = runner.Initialize();
  if (ready.ok()) ready = Preload(settings);
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
  ForkedConfinement forked;
  if (ready.ok()) ready = PrepareForkedConfinement(settings, &forked);
  if (!WriteZygoteReady(control, ready).ok()) {
    GuardAfterControlClosed(parent_pidfd, guard);
    return 2;
  }
  if (!ready.ok()) return 2;  // pyexecd reports it and stops
  // Each worker's first allocations would otherwise take the zygote's free
  // chunks and blocks, copying the pages they lie in (zygote_heap.h).
  FillObjectPools();
  StopMallocFastbins();
  FillMallocHoles();
  while (true) {
    absl::StatusOr<ZygoteRequest> request = ReceiveZygoteRequest(control);
    if (!request.ok()) {
      GuardAfterControlClosed(parent_pidfd, guard);
      return request.status().code() == absl::StatusCode::kCancelled ? 0 : 4;
    }
    pid_t pid = ForkWorker(*request, control, parent_pidfd, runner, settings,
                           forked, guard);
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
  const pyexec::internal::WorkerSettings settings = pyexec::ReadSettings();
  if (absl::GetFlag(FLAGS_zygote)) return pyexec::RunZygote(settings);
  int code = pyexec::RunSpawned(settings);
  // The socket closed (pyexecd is gone or let us go) or failed. The watchdog
  // may not have run yet: take user code's processes down with us now.
  pyexec::KillOwnProcessGroup();
  return code;
}
