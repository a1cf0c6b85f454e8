#include "bench/process_floor.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pyexec {
namespace bench {
namespace {

int64_t Micros(const timeval& t) { return int64_t{t.tv_sec} * 1000000 + t.tv_usec; }

int64_t UsageMicros(int who) {
  rusage u{};
  getrusage(who, &u);
  return Micros(u.ru_utime) + Micros(u.ru_stime);
}

// The helper: maps and fills the template memory, then forks `iterations`
// children that dirty their share and exit. Writes the CPU microseconds per
// iteration to `out`. Only system calls after the fork that made it.
[[noreturn]] void RunHelper(const ProcessFloorOptions& o, int out) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t size = static_cast<size_t>(o.resident_bytes);
  char* memory = static_cast<char*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (memory == MAP_FAILED) _exit(2);
  for (size_t at = 0; at < size; at += page) memory[at] = 1;
  const size_t dirty_pages = static_cast<size_t>(o.dirtied_bytes) / page;
  const size_t stride = dirty_pages == 0 ? 0 : std::max<size_t>(1, size / page / dirty_pages);
  const int64_t before = UsageMicros(RUSAGE_SELF) + UsageMicros(RUSAGE_CHILDREN);
  for (int i = 0; i < o.iterations; ++i) {
    pid_t child = fork();
    if (child < 0) _exit(3);
    if (child == 0) {
      for (size_t p = 0; p < dirty_pages; ++p) {
        memory[(p * stride * page) % size] = 2;
      }
      _exit(0);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
  const int64_t after = UsageMicros(RUSAGE_SELF) + UsageMicros(RUSAGE_CHILDREN);
  int64_t per = (after - before) / o.iterations;
  (void)!write(out, &per, sizeof(per));
  _exit(0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<absl::Duration> MeasureProcessFloor(const ProcessFloorOptions& options) {
  if (options.iterations <= 0 || options.resident_bytes <= 0) {
    return absl::InvalidArgumentError("iterations and resident_bytes must be positive");
  }
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  pid_t helper = fork();
  if (helper < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (helper == 0) {
    close(fds[0]);
    RunHelper(options, fds[1]);
  }
  close(fds[1]);
  int64_t per = -1;
  ssize_t n;
  while ((n = read(fds[0], &per, sizeof(per))) < 0 && errno == EINTR) {
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(helper, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != sizeof(per) || per < 0) {
    return absl::InternalError(absl::StrCat("the floor helper failed (status ", status, ")"));
  }
  return absl::Microseconds(per);
}

absl::StatusOr<absl::Duration> MachineBusyTime() {
  const std::string text = ReadFile("/proc/stat");
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
  std::string text = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  // The command may hold spaces: fields start after its closing parenthesis.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return absl::NotFoundError(absl::StrCat("no process ", pid));
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(text).substr(close + 2), ' ', absl::SkipEmpty());
  // After the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14).
  if (f.size() < 15) return absl::InternalError("unexpected /proc/PID/stat");
  int64_t ticks = 0;
  for (int i : {11, 12, 13, 14}) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(f[i], &v)) return absl::InternalError("unexpected /proc/PID/stat");
    ticks += v;
  }
  return absl::Seconds(static_cast<double>(ticks) / sysconf(_SC_CLK_TCK));
}

}  // namespace bench
}  // namespace pyexec
