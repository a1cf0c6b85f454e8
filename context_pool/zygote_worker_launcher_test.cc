// ZygoteWorkerLauncher against the real pyexec_worker binary: forked workers
// speak the frame protocol, lead their own process group, are reaped by us,
// get fresh random state, see the preloads, survive the zygote's death.

#include "context_pool/zygote_worker_launcher.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/frame.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

WorkerProcessOptions WorkerOptions() {
  WorkerProcessOptions o;
  o.worker_binary =
      absl::StrCat(std::getenv("TEST_SRCDIR"), "/pyexec/worker/pyexec_worker");
  return o;
}

// Blocking helpers over the (non-blocking) pool end of a worker socket.
bool WaitReadable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

internal::WorkerResponse ReadResponse(WorkerProcess& w) {
  FrameDecoder decoder(1 << 20);
  char buffer[65536];
  while (true) {
    absl::StatusOr<std::optional<std::string>> frame = decoder.Next();
    EXPECT_TRUE(frame.ok());
    if (frame.ok() && frame->has_value()) {
      internal::WorkerResponse r;
      EXPECT_TRUE(ParseFramePayload(**frame, &r));
      return r;
    }
    if (!WaitReadable(w.socket_fd(), 10000)) {
      ADD_FAILURE() << "worker did not answer";
      return {};
    }
    ssize_t n = read(w.socket_fd(), buffer, sizeof(buffer));
    if (n <= 0) {
      ADD_FAILURE() << "worker socket closed";
      return {};
    }
    decoder.Append(buffer, static_cast<size_t>(n));
  }
}

void Send(WorkerProcess& w, uint64_t id, const std::string& code, bool exec = false) {
  internal::WorkerRequest request;
  request.set_id(id);
  if (exec) {
    request.mutable_exec()->set_code(code);
  } else {
    request.mutable_eval()->set_code(code);
  }
  std::string bytes;
  AppendFrame(request, &bytes);
  ASSERT_EQ(write(w.socket_fd(), bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
}

internal::WorkerResponse Eval(WorkerProcess& w, const std::string& code) {
  static uint64_t next_id = 1;
  Send(w, next_id++, code);
  return ReadResponse(w);
}

std::unique_ptr<WorkerProcess> Ready(ZygoteWorkerLauncher& launcher) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> w = launcher.Launch();
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  internal::WorkerResponse hello = ReadResponse(**w);
  EXPECT_TRUE(hello.has_hello());
  EXPECT_EQ(hello.hello().pid(), (*w)->pid());
  return std::move(*w);
}

TEST(ZygoteWorkerLauncherTest, ForkedWorkersServeInTheirOwnGroupWithFreshRandom) {
  ZygoteOptions zygote;
  zygote.preload = {"json", "random"};
  ZygoteWorkerLauncher launcher(WorkerOptions(), zygote);
  ASSERT_TRUE(launcher.Start().ok());
  std::unique_ptr<WorkerProcess> a = Ready(launcher);
  std::unique_ptr<WorkerProcess> b = Ready(launcher);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->pid(), b->pid());
  EXPECT_EQ(getpgid(a->pid()), a->pid());
  // Re-parented to us: the zygote forked through a process that exited.
  std::ifstream stat(absl::StrCat("/proc/", a->pid(), "/stat"));
  std::string pid_field, comm, state;
  int ppid = 0;
  stat >> pid_field >> comm >> state >> ppid;
  EXPECT_EQ(ppid, getpid());

  EXPECT_EQ(Eval(*a, "1 + 1").value().int_(), 2);
  EXPECT_TRUE(Eval(*a, "'json' in __import__('sys').modules").value().bool_());
  std::string ra = Eval(*a, "repr(__import__('random').random())").value().str();
  std::string rb = Eval(*b, "repr(__import__('random').random())").value().str();
  EXPECT_NE(ra, rb);
}

TEST(ZygoteWorkerLauncherTest, InterruptAndKillWorkLikeSpawnedWorkers) {
  ZygoteWorkerLauncher launcher(WorkerOptions(), ZygoteOptions{});
  ASSERT_TRUE(launcher.Start().ok());
  std::unique_ptr<WorkerProcess> w = Ready(launcher);
  ASSERT_TRUE(w);
  Send(*w, 77, "while True: pass", /*exec=*/true);
  usleep(100 * 1000);
  w->Interrupt(77);
  internal::WorkerResponse r = ReadResponse(*w);
  EXPECT_EQ(r.id(), 77u);
  EXPECT_EQ(r.error().type(), "KeyboardInterrupt");

  w->Kill();
  // No exit fd: the socket hangs up, then the process becomes reapable.
  EXPECT_EQ(w->exit_fd(), -1);
  ASSERT_TRUE(WaitReadable(w->socket_fd(), 5000));
  std::optional<WorkerExit> how;
  for (int i = 0; i < 500 && !how.has_value(); ++i) {
    how = w->TryReap();
    if (!how.has_value()) usleep(1000);
  }
  ASSERT_TRUE(how.has_value());
  EXPECT_EQ(how->description, "killed by signal SIGKILL");
  EXPECT_EQ(how->cause, DeathCause::kSignal);
}

TEST(ZygoteWorkerLauncherTest, DeadZygoteIsRestartedAndWorkersCarryOn) {
  ZygoteWorkerLauncher launcher(WorkerOptions(), ZygoteOptions{});
  ASSERT_TRUE(launcher.Start().ok());
  std::unique_ptr<WorkerProcess> before = Ready(launcher);
  ASSERT_TRUE(before);
  pid_t zygote = launcher.zygote_pid();
  ASSERT_EQ(kill(zygote, SIGKILL), 0);
  // Let it die before the next fork request (no sleep needed for
  // correctness: a request to a dying zygote fails and is retried).
  siginfo_t info;
  waitid(P_PID, zygote, &info, WEXITED | WNOWAIT);
  EXPECT_EQ(Eval(*before, "40 + 2").value().int_(), 42);
  std::unique_ptr<WorkerProcess> after = Ready(launcher);
  ASSERT_TRUE(after);
  EXPECT_EQ(Eval(*after, "2 * 21").value().int_(), 42);
  EXPECT_EQ(launcher.restarts(), 1);
  EXPECT_NE(launcher.zygote_pid(), zygote);
}

TEST(ZygoteWorkerLauncherTest, FailingPreloadStopsStartWithTheTraceback) {
  ZygoteOptions zygote;
  zygote.preload = {"json", "no_such_module_pyexec"};
  ZygoteWorkerLauncher launcher(WorkerOptions(), zygote);
  absl::Status s = launcher.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("Traceback"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("No module named 'no_such_module_pyexec'"));
}

TEST(ZygoteWorkerLauncherTest, PreloadFileRunsOnceInMain) {
  std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/setup.py");
  std::ofstream(path) << "import os\nSETUP_PID = os.getpid()\n";
  ZygoteOptions zygote;
  zygote.preload_file = path;
  ZygoteWorkerLauncher launcher(WorkerOptions(), zygote);
  ASSERT_TRUE(launcher.Start().ok());
  std::unique_ptr<WorkerProcess> w = Ready(launcher);
  ASSERT_TRUE(w);
  // Defined once, in the zygote: not in the worker's own pid.
  EXPECT_EQ(Eval(*w, "SETUP_PID").value().int_(), launcher.zygote_pid());
}

}  // namespace
}  // namespace pyexec
