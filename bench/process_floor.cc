#include "bench/process_floor.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace pyexec {
namespace bench {
namespace {

// Runs the helper with `args` and returns what it printed, a number.
absl::StatusOr<double> RunHelper(const std::string& helper, std::vector<std::string> args) {
  args.insert(args.begin(), helper);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, helper.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return absl::FailedPreconditionError(absl::StrCat("cannot start ", helper, ": ", strerror(rc)));
  }
  std::string out;
  char buf[64];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  double value = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(out), &value)) {
    return absl::InternalError(
        absl::StrCat(helper, " failed (status ", status, ", output '", out, "')"));
  }
  return value;
}

}  // namespace

absl::StatusOr<absl::Duration> MeasureProcessFloor(const ProcessFloorOptions& options) {
  if (options.iterations <= 0 || options.resident_bytes <= 0) {
    return absl::InvalidArgumentError("iterations and resident_bytes must be positive");
  }
  absl::StatusOr<double> micros = RunHelper(
      options.helper_binary,
      {"fork", absl::StrCat(options.resident_bytes), absl::StrCat(options.dirtied_bytes),
       absl::StrCat(options.iterations)});
  if (!micros.ok()) return micros.status();
  return absl::Microseconds(*micros);
}

absl::StatusOr<absl::Duration> MeasureProcessHop(const std::string& helper_binary,
                                                 int iterations) {
  if (iterations <= 0) return absl::InvalidArgumentError("iterations must be positive");
  absl::StatusOr<double> micros =
      RunHelper(helper_binary, {"hop", absl::StrCat(iterations)});
  if (!micros.ok()) return micros.status();
  return absl::Microseconds(*micros);
}

}  // namespace bench
}  // namespace pyexec
