#include "worker/landlock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Runs `body` in a forked child restricted by RestrictSelfWithLandlock and
// returns what it reports: "" when every check passed. The restriction is
// irreversible, so it never runs in the test process itself.
// `uid` >= 0: the child switches to it first (the test runs as root in CI;
// a root process may read other processes' /proc entries whatever the
// domain says, and workers never run as root).
std::string InLandlockedChild(const std::string& private_dir,
                              const std::function<std::string()>& body,
                              int uid = -1) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    absl::StatusOr<LandlockRules> rules = LandlockRules::ForWorkers({}, false);
    if (uid >= 0 && (setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)) {
      out = "cannot switch to uid " + std::to_string(uid);
    } else if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) {
      // A uid switch makes a process non-dumpable, which closes /proc to
      // everyone else whatever the domain; the checks are about Landlock.
      out = "PR_SET_DUMPABLE failed";
    } else if (!rules.ok()) {
      out = "ForWorkers: " + std::string(rules.status().message());
    } else if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      out = "no_new_privs failed";
    } else if (absl::Status s = RestrictSelfWithLandlock(*rules, private_dir); !s.ok()) {
      out = "RestrictSelfWithLandlock: " + std::string(s.message());
    } else {
      rules->Close();
      out = body();
    }
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

std::string Expect(const char* what, bool ok) {
  return ok ? "" : std::string(what) + " (" + strerror(errno) + "); ";
}

std::string ExpectDenied(const char* what, int rc_or_fd) {
  if (rc_or_fd >= 0) {
    close(rc_or_fd);
    return std::string(what) + " was allowed; ";
  }
  if (errno != EACCES && errno != EPERM) {
    return std::string(what) + ": " + strerror(errno) + " instead of EACCES; ";
  }
  return "";
}

class LandlockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (LandlockAbi() < 1) GTEST_SKIP() << "Landlock is not available here";
    char mine[] = "/tmp/landlock_test_mine.XXXXXX";
    char other[] = "/tmp/landlock_test_other.XXXXXX";
    ASSERT_NE(mkdtemp(mine), nullptr);
    ASSERT_NE(mkdtemp(other), nullptr);
    mine_ = mine;
    other_ = other;
    // Readable by everybody: only Landlock may refuse it.
    chmod(other_.c_str(), 0755);
    int fd = open((other_ + "/secret").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "x", 1), 1);
    close(fd);
  }
  void TearDown() override {
    unlink((other_ + "/secret").c_str());
    unlink((mine_ + "/f").c_str());
    rmdir(other_.c_str());
    rmdir(mine_.c_str());
    unlink("/dev/shm/landlock_test_segment");
  }
  std::string mine_, other_;
};

TEST_F(LandlockTest, FilesOutsideTheRulesAreRefused) {
  const std::string other = other_, mine = mine_;
  std::string result = InLandlockedChild(mine, [&] {
    std::string out;
    out += Expect("read /etc/passwd", open("/etc/passwd", O_RDONLY | O_CLOEXEC) >= 0);
    out += Expect("read /usr/lib", opendir("/usr/lib") != nullptr);
    out += ExpectDenied("read another directory's file",
                        open((other + "/secret").c_str(), O_RDONLY | O_CLOEXEC));
    out += ExpectDenied("list another directory", open(other.c_str(), O_RDONLY | O_DIRECTORY));
    out += ExpectDenied("create in /tmp",
                        open("/tmp/landlock_test_planted", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    out += ExpectDenied("write /etc/passwd", open("/etc/passwd", O_WRONLY | O_CLOEXEC));
    int fd = open((mine + "/f").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    out += Expect("write in the private directory", fd >= 0 && write(fd, "y", 1) == 1);
    if (fd >= 0) close(fd);
    out += Expect("open /dev/null for writing with O_TRUNC",
                  open("/dev/null", O_WRONLY | O_TRUNC | O_CLOEXEC) >= 0);
    // /dev/shm: make and use a segment, never list the others.
    fd = open("/dev/shm/landlock_test_segment", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    out += Expect("create in /dev/shm", fd >= 0 && ftruncate(fd, 4096) == 0);
    if (fd >= 0) close(fd);
    out += ExpectDenied("list /dev/shm", open("/dev/shm", O_RDONLY | O_DIRECTORY));
    out += Expect("remove own segment", unlink("/dev/shm/landlock_test_segment") == 0);
    return out;
  });
  EXPECT_EQ(result, "");
  // Nothing leaked out of the domain.
  EXPECT_NE(access("/tmp/landlock_test_planted", F_OK), 0);
}

// A process of the same uid, dumpable, outside the domain: a sibling
// session's subprocess, or pyexecd itself in the non-root form.
class Victim {
 public:
  explicit Victim(int uid) {
    pid_ = fork();
    if (pid_ == 0) {
      if (uid >= 0 && (setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)) {
        _exit(1);
      }
      prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
      pause();
      _exit(0);
    }
  }
  ~Victim() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

TEST_F(LandlockTest, ProcessesOutsideTheDomainAreOutOfReach) {
  const int abi = LandlockAbi();
  const int uid = geteuid() == 0 ? 65534 : -1;
  Victim victim(uid);
  const std::string victim_pid = std::to_string(victim.pid());
  // The private directory must be usable by the child's uid.
  chmod(mine_.c_str(), 0777);
  std::string result = InLandlockedChild(mine_, [abi, &victim, victim_pid] {
    std::string out;
    // Let the victim finish its own set-up (uid switch) first.
    usleep(100 * 1000);
    out += ExpectDenied("read /proc/PID/environ of a same-uid process outside",
                        open(("/proc/" + victim_pid + "/environ").c_str(), O_RDONLY));
    char target[256];
    errno = 0;
    out += ExpectDenied("read /proc/PID/cwd of a same-uid process outside",
                        static_cast<int>(readlink(("/proc/" + victim_pid + "/cwd").c_str(),
                                                  target, sizeof(target))));
    out += Expect("read own /proc/self/environ",
                  open("/proc/self/environ", O_RDONLY | O_CLOEXEC) >= 0);
    if (abi >= 6) {
      out += ExpectDenied("signal a same-uid process outside", kill(victim.pid(), 0));
    }
    // A child of the restricted process is inside the domain: reachable.
    pid_t child = fork();
    if (child == 0) {
      pause();
      _exit(0);
    }
    out += Expect("read the child's /proc/PID/environ",
                  open(("/proc/" + std::to_string(child) + "/environ").c_str(),
                       O_RDONLY | O_CLOEXEC) >= 0);
    out += Expect("kill own child", kill(child, SIGKILL) == 0);
    waitpid(child, nullptr, 0);
    // Programs still run.
    pid_t prog = fork();
    if (prog == 0) {
      execl("/bin/true", "true", nullptr);
      _exit(127);
    }
    int status = 0;
    waitpid(prog, &status, 0);
    out += Expect("exec /bin/true", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return out;
  }, uid);
  EXPECT_EQ(result, "");
}

TEST(LandlockRulesTest, RequiredPathsMustExist) {
  LandlockRules rules;
  EXPECT_TRUE(rules.Add("/nonexistent/optional", LandlockAccess::kReadOnly).ok());
  EXPECT_EQ(rules.size(), 0u);
  absl::Status s = rules.Add("/nonexistent/required", LandlockAccess::kReadOnly, true);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/required"), std::string::npos) << s;
  EXPECT_FALSE(LandlockRules::ForWorkers({"/nonexistent/extra"}, false).ok());
}

TEST(LandlockRulesTest, DescribesWhatTheAbiEnforces) {
  EXPECT_EQ(DescribeLandlock(0), "unavailable");
  EXPECT_NE(DescribeLandlock(7).find("signals"), std::string::npos);
  EXPECT_NE(DescribeLandlock(3).find("need ABI 6"), std::string::npos);
}

}  // namespace
}  // namespace pyexec
