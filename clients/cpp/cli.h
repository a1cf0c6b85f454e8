// The `pyexec` command-line tool, minus flag parsing (see pyexec_main.cc).

#ifndef PYEXEC_CLIENTS_CPP_CLI_H_
#define PYEXEC_CLIENTS_CPP_CLI_H_

#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/cpp/client.h"

namespace pyexec {

// Exit codes of the CLI.
inline constexpr int kExitOk = 0;
// The Python code raised; the traceback went to stderr.
inline constexpr int kExitPythonError = 1;
// The RPC failed; "pyexec: CODE: message" went to stderr.
inline constexpr int kExitRpcError = 2;
// Bad command line (sysexits.h EX_USAGE).
inline constexpr int kExitUsage = 64;

// Settings of one CLI run, filled from flags.
struct CliOptions {
  // Server address, host:port.
  std::string addr = "127.0.0.1:50051";
  // Deadline of each RPC; zero sends none.
  absl::Duration timeout = absl::Seconds(30);
  // Session token for eval/exec/call; empty runs on a pooled interpreter.
  std::string session;
  // Idle timeout that `bind` asks for; zero asks for the server default.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // Print one JSON object per command on `out`, errors included, instead of
  // Python reprs and text (exit codes unchanged). See kCliUsage.
  bool json = false;
  // TLS and credentials of the channel (--tls*, --token*, $PYEXEC_TOKEN).
  ChannelOptions channel;
  // exec and call: print output (and call's values) as the server streams
  // them (ExecStream/CallStream) instead of when the call ends.
  bool stream = false;
};

// The bearer token for the CLI: `flag_token` (--token), else the contents of
// `token_file` (--token_file) with surrounding whitespace trimmed, else
// `env_token` ($PYEXEC_TOKEN; null when unset). Empty means no token.
// INVALID_ARGUMENT if both --token and --token_file are given, or the file
// cannot be read or holds no token. Messages never contain the token.
absl::StatusOr<std::string> ResolveToken(const std::string& flag_token,
                                         const std::string& token_file,
                                         const char* env_token);

// One-paragraph usage text listing the commands.
extern const char kCliUsage[];

// Runs one command: `args` are the positional arguments after the flags,
// e.g. {"eval", "1+1"}. Values are printed to `out` as Python's repr() would,
// one per line; captured stdout of the call goes to `out` and captured stderr
// to `err` before it. Returns one of the kExit* codes:
//   eval CODE                        prints the value
//   exec CODE                        prints nothing but the output
//                                    (with --stream: as it is written)
//                                    CODE "-" is all of `in`; "@FILE" (with
//                                    no newline) is FILE's contents
//   call MODULE FUNCTION [ARG...]    ARGs parsed by ParseCallArgs (Python
//                                    literals, bare words, --str ARG)
//   bind                             prints the token (bound without a
//                                    lease: the token outlives the process)
//   unbind TOKEN                     prints nothing
//   interrupt TOKEN                  prints "interrupted" or "nothing was
//                                    running"
//   release TOKEN REF_ID...          prints how many refs were live
//   snapshot TOKEN FILE              writes the session's snapshot blob to
//                                    FILE ("-": `out`, the summary then goes
//                                    to `err`); prints "N bytes, M modules,
//                                    R refs"; each name it could not carry
//                                    goes to `err`
//   restore FILE                     binds a session (no lease) restored
//                                    from FILE ("-": `in`); prints its token;
//                                    lost modules and a __pyexec_restore__
//                                    error go to `err`
//   stats                            prints "name: value" per GetStats field
// With options.json, `out` gets exactly one JSON object on one line instead:
//   eval/call  {"value": TAGGED, "stdout": "...", "stderr": "..."}
//   exec       {"stdout": "...", "stderr": "..."}
//   bind       {"session": "...", "idle_timeout_seconds": N}
//   unbind     {}
//   interrupt  {"interrupted": true|false}
//   release    {"released": N}
//   snapshot   {"bytes": N, "modules": [...], "refs": N, "lost": [{"name",
//              "type", "reason"}]} (not with FILE "-")
//   restore    {"session": "...", "idle_timeout_seconds": N,
//              "restore_lost": [...], "restore_error": {"type", "message"}}
//   stats      {"num_workers": N, ...}
//   errors     {"error": {"kind": "python_error", "type", "message",
//              "traceback"}, "stdout", "stderr"}, {"error": {"kind": "status",
//              "code": "NOT_FOUND", "message"}} or {"error": {"kind": "usage",
//              "message"}}
// With --stream and --json, one object per line per event instead:
//   {"stdout": "chunk"}, {"stderr": "chunk"}, {"value": TAGGED} (call), then
//   {} or {"error": ...} at the end.
// TAGGED is the lossless value form of clients/conformance/README.md.
int RunCli(const CliOptions& options, const std::vector<std::string>& args,
           std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLI_H_
