// The `pyexec call` command's positional arguments as Values.

#ifndef PYEXEC_CLIENTS_CPP_CLI_ARGS_H_
#define PYEXEC_CLIENTS_CPP_CLI_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// The marker that makes the next `call` argument a str, whatever it holds.
inline constexpr char kStrMarker[] = "--str";

// Turns one command-line argument into a Value:
// - a Python literal, as ParsePythonLiteral reads it (so 42, 2**64, 1.5,
//   nan, None, True, 'text', b'\x00', [3, 1], (1,), {'k': 1}, {1, 2}, set());
// - else, if it starts like a literal that went wrong (after leading
//   whitespace: one of [ ( { or a quote, optionally after a string prefix
//   such as b or r; or an integer followed by **), INVALID_ARGUMENT saying
//   why and suggesting --str;
// - else the argument itself, verbatim, as a str ("bare word"): hello,
//   1.2.3, 2024-01-01, a b, true, ''.
// INVALID_ARGUMENT also for a bare word that is not valid UTF-8.
absl::StatusOr<v1::Value> ParseLiteralArg(absl::string_view arg);

// Parses the ARGs of `pyexec call MODULE FUNCTION [ARG...]`. kStrMarker
// ("--str") before an argument passes that one argument verbatim as a str
// (`--str 42` is '42', `--str --str` is '--str'); it applies to the next
// argument only. `--str=TEXT` is the same as `--str TEXT`. INVALID_ARGUMENT, naming the argument by its position
// (1-based) and text, for an argument that ParseLiteralArg refuses or a
// trailing --str.
absl::StatusOr<std::vector<v1::Value>> ParseCallArgs(const std::vector<std::string>& args);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLI_ARGS_H_
