#ifndef PYEXEC_COMMON_LOGGING_H_
#define PYEXEC_COMMON_LOGGING_H_

#include "absl/strings/string_view.h"

namespace pyexec {

// Writes one lifecycle line to stderr:
//   2026-11-21T03:27:06.123456Z I pyexecd[1234] message
// A line is written with a single write(2), so lines from concurrent threads
// and processes sharing stderr do not interleave. Thread-safe.
void LogInfo(absl::string_view message);
void LogWarning(absl::string_view message);
void LogError(absl::string_view message);

// Sets the program name shown in log lines (default "pyexec"). Call once,
// before any other thread logs.
void SetLogProgramName(absl::string_view name);

}  // namespace pyexec

#endif  // PYEXEC_COMMON_LOGGING_H_
