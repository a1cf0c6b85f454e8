// `pyexec repl`: an interactive Python session on a pyexec server.

#ifndef PYEXEC_CLIENTS_CPP_CLI_REPL_H_
#define PYEXEC_CLIENTS_CPP_CLI_REPL_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "clients/cpp/cli.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// Runs the REPL on the terminal (stdin/stdout/stderr) until end of input
// (Ctrl-D) or SystemExit, and returns a kExit* code (or SystemExit's code).
//
// - Binds a session at start, leased to the REPL, and unbinds it at exit.
//   The lease (an Attach stream) also ends when the REPL dies without
//   unbinding (SIGKILL, a closed terminal, a lost connection): the server
//   then unbinds the session after its --lease_grace. With options.session
//   set, uses that session instead, neither leases nor unbinds it.
// - Lines are read with libedit (line editing; history in `history_file`
//   when not empty). Tab completes names and attributes (`math.p`) from the
//   session's namespace, as python3 -i does (rlcompleter, asked through an
//   Eval on the session with a deadline of a few seconds; a Tab on an empty
//   word inserts a tab).
// - Multi-line blocks follow Python's interactive rules: the buffered source
//   is checked by the server's `codeop.compile_command` (a stateless call), so
//   a block continues ("... ") until it compiles, which for a compound
//   statement means until a blank line.
// - Each statement runs as python3 -i runs it (see repl_helper.py and
//   ReplStatementCode), through ExecStream: output appears as it is written;
//   every expression statement prints its repr (None prints nothing, `_` is
//   set); tracebacks go to stderr; input() raises EOFError saying that the
//   remote interpreter cannot read this terminal.
// - Each statement, and the Bind, carries options.timeout as its deadline
//   (DEADLINE_EXCEEDED is reported and the REPL goes on).
// - Ctrl-C while code runs cancels the stream, which interrupts the Python
//   code; the session and its state are kept. Ctrl-C at the prompt drops the
//   pending input.
// - If the server loses the session (NOT_FOUND, ABORTED), a bound-here
//   session is replaced by a fresh (leased) one and the REPL says so; an attached one
//   (options.session) ends the REPL with kExitRpcError.
// options.json is not supported (kExitUsage).
int RunRepl(const CliOptions& options, const std::string& history_file);

// The code of the ExecStream that runs one REPL statement `source` (UTF-8,
// complete by codeop's rules) in the session: repl_helper.py, run in a
// namespace of its own so that the session gains no names but the
// statement's.
std::string ReplStatementCode(absl::string_view source);

// A Python expression that, evaluated in the session, lists the completions
// of `text` (the word before the cursor) as rlcompleter gives them to
// python3 -i: names, keywords, and attributes after a dot, callables with
// "(" appended.
std::string ReplCompletionCode(absl::string_view text);

// The completions in the value of ReplCompletionCode; empty for any value
// that is not a list of str.
std::vector<std::string> CompletionsFromValue(const v1::Value& value);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLI_REPL_H_
