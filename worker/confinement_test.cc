#include "worker/confinement.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Runs `body` in a forked child after ConfineWorker(options) and returns the
// child's message: empty when every check passed, else what failed. The
// confinement is irreversible, so it never runs in the test process itself.
// `setup` runs in the child before ConfineWorker and returns the body.
std::string InConfinedChildAfter(
    const std::function<std::function<std::string()>()>& setup,
    const ConfinementOptions& options) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::function<std::string()> body = setup();
    absl::Status s = ConfineWorker(options);
    std::string out = s.ok() ? body() : "ConfineWorker: " + std::string(s.message());
    if (write(fds[1], out.data(), out.size()) < 0) _exit(3);
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "child died with status " + std::to_string(status);
  return out;
}

std::string InConfinedChild(const ConfinementOptions& options,
                            const std::function<std::string()>& body) {
  return InConfinedChildAfter([&body] { return body; }, options);
}

std::string ExpectErrno(const char* what, long rc, int expected) {
  if (rc != -1) return std::string(what) + " succeeded; ";
  if (errno != expected) return std::string(what) + ": " + strerror(errno) + "; ";
  return "";
}

// What the filter must refuse, checked in a confined child; "" if all is well.
std::string SeccompRefusals() {
  std::string out;
  // Run as whatever user the test runs as (root in CI): only the filter
  // explains an EPERM from mount as root.
  out += ExpectErrno("ptrace(TRACEME)", ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM);
  out += ExpectErrno("unshare(NEWUSER)", unshare(CLONE_NEWUSER), EPERM);
  out += ExpectErrno("mount", mount("none", "/mnt", "tmpfs", 0, nullptr), EPERM);
  out += ExpectErrno("umount2", umount2("/proc", MNT_DETACH), EPERM);
  out += ExpectErrno("setns", syscall(SYS_setns, 0, 0), EPERM);
  out += ExpectErrno("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM);
  out += ExpectErrno("bpf", syscall(SYS_bpf, 0, nullptr, 0), EPERM);
  out += ExpectErrno("setsid", setsid(), EPERM);
  out += ExpectErrno("clone3", syscall(SYS_clone3, nullptr, 0), ENOSYS);
  // Still a working process: fork (clone without namespace flags) works.
  pid_t child = fork();
  if (child < 0) out += std::string("fork: ") + strerror(errno) + "; ";
  if (child == 0) _exit(0);
  if (child > 0) waitpid(child, nullptr, 0);
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) out += "no_new_privs not set; ";
  if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) out += "still dumpable; ";
  return out;
}

TEST(ConfinementTest, SeccompRefusesDangerousSyscallsWithEperm) {
  ConfinementOptions options;
  EXPECT_EQ(InConfinedChild(options, SeccompRefusals), "");
}

// The zygote compiles the filter once and its forked workers only install
// it: the same refusals, from a program compiled in another process.
TEST(ConfinementTest, PrecompiledSeccompFilterRefusesTheSame) {
  absl::StatusOr<SeccompFilter> filter = SeccompFilter::Compile();
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_GT(filter->instructions(), 60u);
  ConfinementOptions options;
  options.compiled_seccomp = &*filter;
  EXPECT_EQ(InConfinedChild(options, SeccompRefusals), "");
}

// A thread started before ConfineWorker (like the worker's parent watchdog)
// that tries a refused syscall once told to.
class EarlyThread {
 public:
  EarlyThread()
      : thread_([this] {
          go_.get_future().wait();
          verdict_ = ExpectErrno("ptrace in a thread started before confinement",
                                 ptrace(PTRACE_TRACEME, 0, nullptr, nullptr), EPERM);
        }) {}
  std::string TryNow() {
    go_.set_value();
    thread_.join();
    return verdict_;
  }

 private:
  std::promise<void> go_;
  std::string verdict_;
  std::thread thread_;
};

// The filter covers threads that existed before it (TSYNC): they must not be
// a way around it.
TEST(ConfinementTest, SeccompCoversThreadsStartedBefore) {
  absl::StatusOr<SeccompFilter> filter = SeccompFilter::Compile();
  ASSERT_TRUE(filter.ok()) << filter.status();
  ConfinementOptions options;
  options.compiled_seccomp = &*filter;
  std::string result = InConfinedChildAfter(
      [] {
        auto* early = new EarlyThread;  // in the child, which _exits: never freed
        return std::function<std::string()>([early] { return early->TryNow(); });
      },
      options);
  EXPECT_EQ(result, "");
}

TEST(ConfinementTest, LimitsAndPrivateDirectory) {
  char dir[] = "/tmp/confinement_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ConfinementOptions options;
  options.seccomp = false;
  options.max_processes = 321;
  options.cpu_seconds = 77;
  options.max_file_bytes = 4096;
  options.private_dir = dir;
  std::string result = InConfinedChild(options, [&] {
    std::string out;
    rlimit l;
    getrlimit(RLIMIT_NPROC, &l);
    if (l.rlim_cur != 321) out += "RLIMIT_NPROC " + std::to_string(l.rlim_cur) + "; ";
    getrlimit(RLIMIT_CPU, &l);
    if (l.rlim_cur != 77) out += "RLIMIT_CPU " + std::to_string(l.rlim_cur) + "; ";
    getrlimit(RLIMIT_FSIZE, &l);
    if (l.rlim_cur != 4096) out += "RLIMIT_FSIZE " + std::to_string(l.rlim_cur) + "; ";
    if (std::string(getenv("HOME")) != dir) out += "HOME not set; ";
    if (std::string(getenv("TMPDIR")) != dir) out += "TMPDIR not set; ";
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == nullptr || std::string(cwd) != dir) {
      out += "cwd not the private dir; ";
    }
    // Past RLIMIT_FSIZE a write fails (SIGXFSZ ignored, as Python does).
    signal(SIGXFSZ, SIG_IGN);
    int fd = open("big", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::string block(8192, 'x');
    if (write(fd, block.data(), block.size()) != 4096) out += "FSIZE not enforced; ";
    if (write(fd, block.data(), 1) != -1 || errno != EFBIG) out += "no EFBIG; ";
    close(fd);
    return out;
  });
  EXPECT_EQ(result, "");
  unlink((std::string(dir) + "/big").c_str());
  rmdir(dir);
}

TEST(ConfinementTest, SwitchesToTheWorkerUserWhenRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CI runs as root)";
  ConfinementOptions options;
  options.uid = 65534;
  options.gid = 65534;
  std::string result = InConfinedChild(options, [] {
    std::string out;
    if (getuid() != 65534 || geteuid() != 65534) out += "uid not switched; ";
    if (getgid() != 65534 || getegid() != 65534) out += "gid not switched; ";
    if (getgroups(0, nullptr) != 1) out += "supplementary groups kept; ";
    if (open("/etc/shadow", O_RDONLY) >= 0) out += "/etc/shadow readable; ";
    if (setuid(0) == 0) out += "regained root; ";
    return out;
  });
  EXPECT_EQ(result, "");
}

TEST(ConfinementTest, CheckConfinementReportsAnUnusableSetting) {
  ConfinementOptions options;
  options.private_dir = "/nonexistent/pyexec/dir";
  absl::Status s = CheckConfinement(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("/nonexistent/pyexec/dir"), std::string::npos) << s;
  EXPECT_TRUE(CheckConfinement(ConfinementOptions{}).ok());
}

TEST(ConfinementTest, ParsesNetworkPolicy) {
  WorkerNetwork n;
  ASSERT_TRUE(ParseWorkerNetwork("none", &n));
  EXPECT_EQ(n, WorkerNetwork::kNone);
  ASSERT_TRUE(ParseWorkerNetwork("host", &n));
  EXPECT_EQ(n, WorkerNetwork::kHost);
  EXPECT_FALSE(ParseWorkerNetwork("bridge", &n));
}

}  // namespace
}  // namespace pyexec
