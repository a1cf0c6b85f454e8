// Snapshot in one worker, restore in a fresh one: each PythonRunner runs in
// a child process of its own (the interpreter is process-global), forked
// from this test process, which never starts Python itself.

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/frame.h"
#include "common/limits.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/python_runner.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr uint64_t kMaxSnapshotBytes = 64 << 20;

// A PythonRunner in a child process, serving requests over a socketpair
// like a worker (partial responses are skipped).
class RunnerProcess {
 public:
  RunnerProcess() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) abort();
    pid_ = fork();
    if (pid_ < 0) abort();
    if (pid_ == 0) {
      close(fds[0]);
      _exit(Serve(fds[1]));
    }
    close(fds[1]);
    fd_ = fds[0];
  }
  ~RunnerProcess() {
    close(fd_);
    int status;
    waitpid(pid_, &status, 0);
  }
  RunnerProcess(const RunnerProcess&) = delete;
  RunnerProcess& operator=(const RunnerProcess&) = delete;

  internal::WorkerResponse Handle(internal::WorkerRequest request) {
    request.set_id(++last_id_);
    request.set_max_refs(100);
    internal::WorkerResponse response;
    if (!WriteFrame(fd_, request).ok()) {
      ADD_FAILURE() << "the runner process is gone";
      return response;
    }
    std::string payload;
    do {
      absl::StatusOr<bool> got = ReadFrame(fd_, kDefaultMaxFrameBytes, &payload);
      if (!got.ok() || !*got || !ParseFramePayload(payload, &response)) {
        ADD_FAILURE() << "no answer from the runner process";
        return internal::WorkerResponse();
      }
    } while (response.partial());
    EXPECT_EQ(response.id(), last_id_);
    return response;
  }

  internal::WorkerResponse Exec(const std::string& code) {
    internal::WorkerRequest request;
    request.mutable_exec()->set_code(code);
    return Handle(request);
  }
  // Evaluates `code`, with `ref` bound to the ref of that id if not empty.
  internal::WorkerResponse Eval(const std::string& code, const std::string& ref = "") {
    internal::WorkerRequest request;
    request.mutable_eval()->set_code(code);
    if (!ref.empty()) (*request.mutable_eval()->mutable_locals())["ref"].mutable_ref()->set_id(ref);
    return Handle(request);
  }
  internal::WorkerResponse Snapshot(uint64_t max_bytes = kMaxSnapshotBytes) {
    internal::WorkerRequest request;
    request.mutable_snapshot()->set_max_bytes(max_bytes);
    return Handle(request);
  }
  internal::WorkerResponse Restore(const std::string& state) {
    internal::WorkerRequest request;
    request.mutable_restore()->set_state(state);
    return Handle(request);
  }

 private:
  static int Serve(int fd) {
    // Never destroyed: the process ends with _exit, as a worker does.
    auto* runner = new PythonRunner(RunnerLimits());
    if (!runner->Initialize().ok()) return 2;
    runner->SetFrameSender(
        [fd](const internal::WorkerResponse& r) { return WriteFrame(fd, r).ok(); });
    std::string payload;
    while (true) {
      absl::StatusOr<bool> got = ReadFrame(fd, kDefaultMaxFrameBytes, &payload);
      if (!got.ok()) return 3;
      if (!*got) return 0;
      internal::WorkerRequest request;
      internal::WorkerResponse response;
      if (!ParseFramePayload(payload, &request)) return 4;
      runner->Handle(request, &response);
      CapResponse(kDefaultMaxMessageBytes, &response);
      if (!WriteFrame(fd, response).ok()) return 5;
    }
  }

  pid_t pid_;
  int fd_;
  uint64_t last_id_ = 0;
};

int Code(absl::StatusCode code) { return static_cast<int>(code); }

// A session's state of every kind the snapshot must carry or list.
constexpr char kSession[] = R"(
import colorsys as cs, json, socket, threading
def add(a, b=2):
    return a + b
def make_counter():
    n = 0
    def inc():
        nonlocal n
        n += 1
        return n
    return inc
counter = make_counter(); counter()
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm2(self):
        return self.x * self.x + self.y * self.y
points = [Point(i, -i) for i in range(1000)]
p = points[3]
big = {i: i for i in range(1_000_000)}
rows = [(i, 'name%d' % i, i * 0.5) for i in range(100_000)]
square = lambda x: x * x
total = 0
def bump():
    global total
    total += 1
    return total
def gen_fn():
    yield 1
    yield 2
gen = gen_fn(); next(gen)
sock = socket.socket()
thread = threading.Thread(target=print)
module = json
)";

TEST(SnapshotTest, EveryKindOfStateRoundTripsIntoAFreshWorker) {
  std::string state, ref;
  {
    RunnerProcess old_worker;
    internal::WorkerResponse r = old_worker.Exec(kSession);
    ASSERT_FALSE(r.has_error()) << r.error().traceback();
    r = old_worker.Eval("p");
    ASSERT_EQ(r.value().kind_case(), v1::Value::kRef) << r.DebugString();
    ref = r.value().ref().id();

    r = old_worker.Snapshot();
    ASSERT_TRUE(r.has_snapshot()) << r.DebugString().substr(0, 2000);
    const internal::SnapshotResult& snapshot = r.snapshot();
    EXPECT_EQ(snapshot.refs(), 1u);
    EXPECT_THAT(snapshot.modules(), ::testing::Contains("colorsys"));
    EXPECT_THAT(snapshot.modules(), ::testing::Not(::testing::Contains("pyexec")));
    std::vector<std::string> lost;
    for (const v1::LostName& name : snapshot.lost()) {
      lost.push_back(absl::StrCat(name.name(), " ", name.type()));
      EXPECT_THAT(name.reason(), HasSubstr("cannot pickle"));
      EXPECT_EQ(name.reason().find('\n'), std::string::npos);
    }
    EXPECT_THAT(lost, UnorderedElementsAre("gen generator", "sock socket.socket",
                                           "thread threading.Thread"));
    // About 10 MB, mostly the dict of a million ints.
    EXPECT_GT(snapshot.state().size(), 10'000'000u);
    state = snapshot.state();
  }

  RunnerProcess new_worker;
  internal::WorkerResponse r = new_worker.Restore(state);
  ASSERT_FALSE(r.has_failure()) << r.failure().message();
  ASSERT_FALSE(r.has_error()) << r.error().traceback();
  EXPECT_THAT(r.restore_lost(), IsEmpty());
  auto eval = [&](const std::string& code, const std::string& with_ref = "") {
    internal::WorkerResponse answer = new_worker.Eval(code, with_ref);
    EXPECT_FALSE(answer.has_error()) << code << ": " << answer.error().traceback();
    EXPECT_FALSE(answer.has_failure()) << code << ": " << answer.failure().message();
    return answer.value();
  };
  EXPECT_EQ(eval("add(40)").int_(), 42);
  EXPECT_EQ(eval("counter()").int_(), 2);  // the closure's cell came along
  EXPECT_EQ(eval("p.norm2()").int_(), 18);
  EXPECT_TRUE(eval("type(p) is Point and all(type(q) is Point for q in points)").bool_());
  EXPECT_TRUE(eval("p is points[3]").bool_());
  EXPECT_TRUE(eval("big == {i: i for i in range(1_000_000)}").bool_());
  EXPECT_TRUE(eval("rows[5] == (5, 'name5', 2.5) and len(rows) == 100_000").bool_());
  EXPECT_EQ(eval("square(7)").int_(), 49);
  EXPECT_TRUE(eval("module is json and json.dumps([1]) == '[1]'").bool_());
  EXPECT_EQ(eval("cs.__name__").str(), "colorsys");
  // A restored function's globals are the session's namespace.
  EXPECT_EQ(eval("bump()").int_(), 1);
  EXPECT_EQ(eval("total").int_(), 1);
  EXPECT_FALSE(eval("'gen' in globals() or 'sock' in globals() or 'thread' in globals()").bool_());
  // The ref came back under its id, as the very object the name holds.
  EXPECT_TRUE(eval("ref is p", ref).bool_());
  // The runner's own names work in the restored session.
  EXPECT_TRUE(eval("callable(pyexec.call) and erlang.call is pyexec.call").bool_());
}

TEST(SnapshotTest, RestoreHookRunsAndItsErrorIsReported) {
  std::string reopening, failing;
  {
    RunnerProcess old_worker;
    ASSERT_FALSE(old_worker
                     .Exec("import socket\n"
                           "sock = socket.socket()\n"
                           "kept = 5\n"
                           "def __pyexec_restore__():\n"
                           "    global sock\n"
                           "    sock = socket.socket()\n"
                           "    print('reopened')\n")
                     .has_error());
    internal::WorkerResponse r = old_worker.Snapshot();
    ASSERT_EQ(r.snapshot().lost_size(), 1) << r.DebugString();
    EXPECT_EQ(r.snapshot().lost(0).name(), "sock");
    reopening = r.snapshot().state();
    ASSERT_FALSE(old_worker
                     .Exec("def __pyexec_restore__():\n"
                           "    raise RuntimeError('cannot reopen')\n")
                     .has_error());
    failing = old_worker.Snapshot().snapshot().state();
  }
  {
    RunnerProcess new_worker;
    internal::WorkerResponse r = new_worker.Restore(reopening);
    EXPECT_FALSE(r.has_error()) << r.error().traceback();
    EXPECT_EQ(r.stdout(), "reopened\n");
    EXPECT_EQ(new_worker.Eval("type(sock).__name__").value().str(), "socket");
  }
  RunnerProcess new_worker;
  internal::WorkerResponse r = new_worker.Restore(failing);
  EXPECT_FALSE(r.has_failure()) << r.failure().message();
  EXPECT_EQ(r.error().type(), "RuntimeError");
  EXPECT_EQ(r.error().message(), "cannot reopen");
  EXPECT_THAT(r.error().traceback(), HasSubstr("in __pyexec_restore__"));
  // The state is restored all the same.
  EXPECT_EQ(new_worker.Eval("kept").value().int_(), 5);
}

TEST(SnapshotTest, AModuleThatNoLongerImportsIsListedOnRestore) {
  char dir[] = "/tmp/pyexec_snapshot_test_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string state;
  {
    RunnerProcess old_worker;
    internal::WorkerResponse r = old_worker.Exec(absl::StrCat(
        "import sys\n"
        "with open('", dir, "/snapshot_test_mod.py', 'w') as f:\n"
        "    f.write('VALUE = 7\\n')\n"
        "sys.path.insert(0, '", dir, "')\n"
        "import snapshot_test_mod as m\n"
        "kept = m.VALUE\n"));
    ASSERT_FALSE(r.has_error()) << r.error().traceback();
    r = old_worker.Snapshot();
    EXPECT_THAT(r.snapshot().modules(), ::testing::Contains("snapshot_test_mod"));
    state = r.snapshot().state();
  }
  ASSERT_EQ(system(absl::StrCat("rm -r ", dir).c_str()), 0);
  RunnerProcess new_worker;
  internal::WorkerResponse r = new_worker.Restore(state);
  ASSERT_FALSE(r.has_failure()) << r.failure().message();
  std::vector<std::string> lost;
  for (const v1::LostName& name : r.restore_lost()) {
    lost.push_back(absl::StrCat(name.name(), " ", name.type()));
    EXPECT_THAT(name.reason(), HasSubstr("No module named 'snapshot_test_mod'"));
  }
  EXPECT_THAT(lost, ElementsAre("snapshot_test_mod module", "m module"));
  EXPECT_EQ(new_worker.Eval("kept").value().int_(), 7);
  EXPECT_EQ(new_worker.Eval("m").error().type(), "NameError");
}

TEST(SnapshotTest, AStateThatDoesNotUnpickleIsRefusedAndTheWorkerStaysUsable) {
  std::string state;
  {
    RunnerProcess old_worker;
    ASSERT_FALSE(old_worker.Exec("def f():\n    return 42\nx = [1, 2]").has_error());
    state = old_worker.Snapshot().snapshot().state();
    ASSERT_FALSE(state.empty());
  }
  RunnerProcess new_worker;
  internal::WorkerResponse r = new_worker.Restore("not a snapshot");
  EXPECT_EQ(r.failure().code(), Code(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.failure().message(), HasSubstr("not a pyexec session snapshot"));

  std::string truncated = state.substr(0, state.size() - 8);
  r = new_worker.Restore(truncated);
  EXPECT_EQ(r.failure().code(), Code(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.failure().message(), HasSubstr("does not unpickle"));

  std::string other_python = state;
  other_python.replace(other_python.find("python 3."), 11, "python 2.7");
  r = new_worker.Restore(other_python);
  EXPECT_EQ(r.failure().code(), Code(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.failure().message(), HasSubstr("made by Python 2.7"));

  // Nothing of the refused states is left, and the worker still serves
  // calls and restores.
  EXPECT_EQ(new_worker.Eval("'f' in globals() or 'x' in globals()").value().bool_(), false);
  EXPECT_EQ(new_worker.Eval("6 * 7").value().int_(), 42);
  r = new_worker.Restore(state);
  EXPECT_FALSE(r.has_failure()) << r.failure().message();
  EXPECT_EQ(new_worker.Eval("f() + len(x)").value().int_(), 44);
}

TEST(SnapshotTest, AStatePastMaxBytesIsRefusedAndTheSessionGoesOn) {
  RunnerProcess worker;
  ASSERT_FALSE(worker.Exec("big = list(range(100_000))").has_error());
  internal::WorkerResponse r = worker.Snapshot(/*max_bytes=*/10'000);
  EXPECT_EQ(r.failure().code(), Code(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(r.failure().message(), HasSubstr("more than 10000 bytes"));
  EXPECT_FALSE(r.has_snapshot());
  EXPECT_EQ(worker.Eval("len(big)").value().int_(), 100'000);
  r = worker.Snapshot();
  EXPECT_TRUE(r.has_snapshot()) << r.DebugString();
}

}  // namespace
}  // namespace pyexec
