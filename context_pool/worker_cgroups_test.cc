#include "context_pool/worker_cgroups.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Runs in a child, so that a v2 set-up (which moves the calling process
// into a leaf) leaves the test process where it was.
TEST(WorkerCgroupsTest, CapsAWorkersProcessesInItsOwnCgroup) {
  int verdict[2];
  ASSERT_EQ(pipe(verdict), 0);
  pid_t tester = fork();
  if (tester == 0) {
    close(verdict[0]);
    std::string out;
    absl::StatusOr<std::unique_ptr<WorkerCgroups>> cgroups = WorkerCgroups::Create(8);
    if (!cgroups.ok()) {
      out = "SKIP " + std::string(cgroups.status().message());
    } else {
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
        out = "Place: " + std::string(path.status().message());
        kill(worker, SIGKILL);
      } else {
        if (write(go[1], "x", 1) != 1) _exit(4);
        int status = 0;
        waitpid(worker, &status, 0);
        const int made = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (made != 7) out += "made " + std::to_string(made) + " processes, not 7; ";
        // The children left behind (in the cgroup, outside the worker's
        // wait) are killed by Remove, which retries once they are gone.
        (*cgroups)->Remove(*path);
        for (int i = 0; i < 200 && (*cgroups)->pending_removals() > 0; ++i) {
          while (waitpid(-1, nullptr, WNOHANG) > 0) {
          }
          usleep(10000);
          (*cgroups)->Sweep();
        }
        if (access(path->c_str(), F_OK) == 0) out += "cgroup not removed; ";
      }
    }
    if (write(verdict[1], out.data(), out.size()) < 0) _exit(5);
    _exit(0);
  }
  close(verdict[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(verdict[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  close(verdict[0]);
  waitpid(tester, nullptr, 0);
  if (out.rfind("SKIP ", 0) == 0) GTEST_SKIP() << "no delegated cgroup here: " << out.substr(5);
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace pyexec
