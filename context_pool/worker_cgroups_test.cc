#include "context_pool/worker_cgroups.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

// What a child process reports through a pipe: runs `body` in a fork (a v2
// set-up moves the calling process into a leaf) and returns what it wrote.
std::string InChild(std::function<std::string()> body) {
  int verdict[2];
  if (pipe(verdict) != 0) return "pipe failed";
  pid_t child = fork();
  if (child == 0) {
    close(verdict[0]);
    std::string out = body();
    if (write(verdict[1], out.data(), out.size()) < 0) _exit(5);
    _exit(0);  // no destructors: as if SIGKILLed, nothing is cleaned up
  }
  close(verdict[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(verdict[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  close(verdict[0]);
  waitpid(child, nullptr, 0);
  return out;
}

// Runs in a child (InChild), so that a v2 set-up (which moves the calling
// process into a leaf) leaves the test process where it was.
TEST(WorkerCgroupsTest, CapsAWorkersProcessesInItsOwnCgroup) {
  std::string out = InChild([] {
    std::string out;
    absl::StatusOr<std::unique_ptr<WorkerCgroups>> cgroups = WorkerCgroups::Create(8);
    if (!cgroups.ok()) return "SKIP " + std::string(cgroups.status().message());
    int go[2];
    if (pipe(go) != 0) _exit(2);
    pid_t worker = fork();
    if (worker == 0) {
      char c;
      if (read(go[0], &c, 1) != 1) _exit(3);
      // Forks until the cap stops it: at most 8 processes in the cgroup.
      int made = 0;
      while (made < 50) {
        pid_t p = fork();
        if (p == 0) {
          pause();
          _exit(0);
        }
        if (p < 0) break;
        ++made;
      }
      _exit(made);
    }
    absl::StatusOr<std::string> path = (*cgroups)->Place(worker);
    if (!path.ok()) {
      kill(worker, SIGKILL);
      return "Place: " + std::string(path.status().message());
    }
    if (write(go[1], "x", 1) != 1) _exit(4);
    int status = 0;
    waitpid(worker, &status, 0);
    const int made = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (made != 7) out += "made " + std::to_string(made) + " processes, not 7; ";
    // The children left behind (in the cgroup, outside the worker's wait)
    // are killed by Remove, which retries once they are gone.
    (*cgroups)->Remove(*path);
    for (int i = 0; i < 200 && (*cgroups)->pending_removals() > 0; ++i) {
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      usleep(10000);
      (*cgroups)->Sweep();
    }
    if (access(path->c_str(), F_OK) == 0) out += "cgroup not removed; ";
    return out;
  });
  if (out.rfind("SKIP ", 0) == 0) GTEST_SKIP() << "no delegated cgroup here: " << out.substr(5);
  EXPECT_EQ(out, "");
}

// A pyexecd that dies without cleaning up leaves its cgroups (v1: its
// pyexecd-PID directory and a w-N per worker): the next pyexecd removes
// them, and they no longer pile up on the node.
TEST(WorkerCgroupsTest, TheNextPyexecdRemovesTheCgroupsOfOneThatDied) {
  // The first one makes a worker cgroup and dies without removing anything.
  std::string left = InChild([] {
    absl::StatusOr<std::unique_ptr<WorkerCgroups>> cgroups = WorkerCgroups::Create(8);
    if (!cgroups.ok()) return "SKIP " + std::string(cgroups.status().message());
    pid_t worker = fork();
    if (worker == 0) _exit(0);
    absl::StatusOr<std::string> path = (*cgroups)->Place(worker);
    waitpid(worker, nullptr, 0);
    if (!path.ok()) return "Place: " + std::string(path.status().message());
    (void)cgroups->release();  // never destroyed
    return *path;
  });
  if (left.rfind("SKIP ", 0) == 0) GTEST_SKIP() << "no delegated cgroup here: " << left.substr(5);
  ASSERT_EQ(left.rfind("/w-", std::string::npos) != std::string::npos, true) << left;
  ASSERT_EQ(access(left.c_str(), F_OK), 0) << left << " should be left behind";
  // The next one to start clears it.
  std::string out = InChild([] {
    absl::StatusOr<std::unique_ptr<WorkerCgroups>> cgroups = WorkerCgroups::Create(8);
    return cgroups.ok() ? std::string() : std::string(cgroups.status().message());
  });
  EXPECT_EQ(out, "");
  EXPECT_NE(access(left.c_str(), F_OK), 0) << left << " was not removed";
  if (left.find("/pyexecd-") != std::string::npos) {  // v1: its pyexecd's directory too
    const std::string base = left.substr(0, left.rfind('/'));
    EXPECT_NE(access(base.c_str(), F_OK), 0) << base << " was not removed";
  }
}

}  // namespace
}  // namespace pyexec
