#include "common/logging.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pyexec {
namespace {

// A plain array rather than a std::string: no non-trivial static objects.
char g_program_name[32] = "pyexec";

void Log(char severity, absl::string_view message) {
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
      " ", std::string(1, severity), " ", g_program_name, "[", getpid(), "] ",
      message, "\n");
  // Best effort: nothing sensible is left to do if stderr is gone.
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace

void LogInfo(absl::string_view message) { Log('I', message); }
void LogWarning(absl::string_view message) { Log('W', message); }
void LogError(absl::string_view message) { Log('E', message); }

void SetLogProgramName(absl::string_view name) {
  size_t n = std::min(name.size(), sizeof(g_program_name) - 1);
  name.copy(g_program_name, n);
  g_program_name[n] = '\0';
}

}  // namespace pyexec
