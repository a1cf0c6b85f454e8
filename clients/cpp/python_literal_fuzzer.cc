// Fuzzes ParsePythonLiteral and the CLI's argument policy: any input gives a
// Value or INVALID_ARGUMENT, never a crash, a hang or a sanitizer report;
// a Value prints (Python's repr) as a literal that parses back to a Value
// with the same repr.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "clients/cpp/cli_args.h"
#include "clients/cpp/python_literal.h"
#include "clients/cpp/value.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<pyexec::v1::Value> v = pyexec::ParsePythonLiteral(text);
  if (v.ok()) {
    const std::string repr = pyexec::FormatValue(*v);
    absl::StatusOr<pyexec::v1::Value> again = pyexec::ParsePythonLiteral(repr);
    if (!again.ok() || pyexec::FormatValue(*again) != repr) std::abort();
  } else if (v.status().code() != absl::StatusCode::kInvalidArgument ||
             v.status().message().empty()) {
    std::abort();
  }
  absl::StatusOr<pyexec::v1::Value> arg = pyexec::ParseLiteralArg(text);
  if (!arg.ok() && arg.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  return 0;
}
