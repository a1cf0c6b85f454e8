#include "bench/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/procfs.h"

namespace pyexec {
namespace bench {
namespace {

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("status ", status);
}

}  // namespace

std::string ParseListeningLine(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (!absl::ConsumePrefix(&line, "listening on ")) return "";
  line = absl::StripAsciiWhitespace(line);
  if (line.empty() || line.find(':') == line.npos) return "";
  return std::string(line);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_path,
    absl::Duration timeout) {
  if (argv.empty() || access(argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "not executable: ", argv.empty() ? "(empty)" : argv[0]));
  }
  // A socket rather than a pipe, so that Stop() can shut down our end even
  // if a grandchild still holds the other one.
  int out[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out) != 0) {
    return absl::InternalError(absl::StrCat("socketpair: ", strerror(errno)));
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    if (!log_path.empty()) {
      int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) dup2(log, STDERR_FILENO);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  std::unique_ptr<ServerProcess> process(new ServerProcess(pid, out[0]));

  // Read lines until the listening line, the deadline, or EOF.
  const absl::Time deadline = absl::Now() + timeout;
  std::string buffer;
  while (process->address_.empty()) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    pollfd pfd{process->stdout_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) {
      continue;
    }
    char chunk[4096];
    const ssize_t n = read(process->stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) break;  // EOF: the child exited or closed stdout.
    buffer.append(chunk, n);
    size_t nl;
    while (process->address_.empty() && (nl = buffer.find('\n')) != buffer.npos) {
      process->address_ = ParseListeningLine(buffer.substr(0, nl));
      buffer.erase(0, nl + 1);
    }
  }
  if (process->address_.empty()) {
    const std::string how = process->Stop(absl::Seconds(2));
    return absl::UnavailableError(absl::StrCat(
        argv[0], " printed no \"listening on HOST:PORT\" line within ",
        absl::FormatDuration(timeout), " (", how, ")"));
  }
  // Keep reading so the child never blocks on a full pipe.
  const int fd = process->stdout_fd_;
  process->drain_ = std::thread([fd] {
    char chunk[4096];
    while (read(fd, chunk, sizeof(chunk)) > 0) {
    }
  });
  return process;
}

std::string ServerProcess::Stop(absl::Duration grace) {
  if (!exit_description_.empty()) return exit_description_;
  kill(pid_, SIGTERM);
  int status = 0;
  const absl::Time deadline = absl::Now() + grace;
  pid_t done = 0;
  while ((done = waitpid(pid_, &status, WNOHANG)) == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (done == 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    exit_description_ = absl::StrCat(DescribeWaitStatus(status),
                                     " (SIGKILL after ", absl::FormatDuration(grace),
                                     ")");
  } else {
    exit_description_ = DescribeWaitStatus(status);
  }
  // A grandchild still holding the child's stdout would keep the drain
  // thread blocked; shutting the socket down makes its read return.
  if (drain_.joinable()) {
    shutdown(stdout_fd_, SHUT_RDWR);
    drain_.join();
  }
  close(stdout_fd_);
  return exit_description_;
}

ServerProcess::~ServerProcess() { Stop(); }

namespace {

// Clock ticks from /proc/PID/stat `fields` at `indexes`, in seconds; false
// if a field is missing.
bool SumTicks(const std::vector<std::string>& fields, std::initializer_list<int> indexes,
              absl::Duration* out) {
  int64_t ticks = 0;
  for (int i : indexes) {
    int64_t v = 0;
    if (static_cast<size_t>(i) >= fields.size() || !absl::SimpleAtoi(fields[i], &v)) {
      return false;
    }
    ticks += v;
  }
  *out = absl::Seconds(static_cast<double>(ticks) / sysconf(_SC_CLK_TCK));
  return true;
}

}  // namespace

absl::StatusOr<absl::Duration> MachineBusyTime() {
  const std::string text = ReadProcFile("/proc/stat");
  const std::string first_line = text.substr(0, text.find('\n'));
  std::vector<absl::string_view> f = absl::StrSplit(first_line, ' ', absl::SkipEmpty());
  // cpu user nice system idle iowait irq softirq steal ...
  if (f.size() < 9 || f[0] != "cpu") return absl::InternalError("unexpected /proc/stat");
  int64_t busy = 0;
  for (int i : {1, 2, 3, 6, 7, 8}) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(f[i], &v)) return absl::InternalError("unexpected /proc/stat");
    busy += v;
  }
  return absl::Seconds(static_cast<double>(busy) / sysconf(_SC_CLK_TCK));
}

absl::StatusOr<absl::Duration> ProcessTreeCpuTime(int pid) {
  const std::vector<std::string> f = ProcStatFields(pid);
  if (f.empty()) return absl::NotFoundError(absl::StrCat("no process ", pid));
  absl::Duration cpu;  // utime, stime, cutime, cstime
  if (!SumTicks(f, {11, 12, 13, 14}, &cpu)) {
    return absl::InternalError("unexpected /proc/PID/stat");
  }
  return cpu;
}

ProcessTreeCounters ReadProcessTreeCounters(pid_t pid) {
  ProcessTreeCounters total;
  std::vector<pid_t> todo = {pid};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    absl::Duration cpu;  // utime, stime
    if (!SumTicks(ProcStatFields(p), {11, 12}, &cpu)) continue;  // gone
    total.cpu += cpu;
    const std::string task_dir = absl::StrCat("/proc/", p, "/task");
    if (DIR* dir = opendir(task_dir.c_str())) {
      while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        std::string status =
            ReadProcFile(absl::StrCat(task_dir, "/", entry->d_name, "/status"));
        for (absl::string_view line : absl::StrSplit(status, '\n')) {
          if (absl::StartsWith(line, "voluntary_ctxt_switches:") ||
              absl::StartsWith(line, "nonvoluntary_ctxt_switches:")) {
            int64_t n = 0;
            if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)), &n)) {
              total.context_switches += n;
            }
          }
        }
      }
      closedir(dir);
    }
    for (pid_t child : ChildPids(p)) todo.push_back(child);
  }
  return total;
}

int64_t RssKb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "VmRSS:")) {
      rest = absl::StripAsciiWhitespace(rest);
      absl::ConsumeSuffix(&rest, "kB");
      int64_t kb;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kb)) return kb;
    }
  }
  return -1;
}

int64_t FdCount(pid_t pid) {
  DIR* dir = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return -1;
  int64_t count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

}  // namespace bench
}  // namespace pyexec
