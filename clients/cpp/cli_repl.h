// `pyexec repl`: an interactive Python session on a pyexec server.

#ifndef PYEXEC_CLIENTS_CPP_CLI_REPL_H_
#define PYEXEC_CLIENTS_CPP_CLI_REPL_H_

#include <string>

#include "clients/cpp/cli.h"

namespace pyexec {

// Runs the REPL on the terminal (stdin/stdout/stderr) until end of input
// (Ctrl-D) and returns a kExit* code.
//
// - Binds a session at start and unbinds it at exit; with options.session
//   set, uses that session instead and leaves it bound.
// - Lines are read with libedit (line editing; history in `history_file`
//   when not empty).
// - Multi-line blocks follow Python's interactive rules: the buffered source
//   is checked by the server's `codeop.compile_command` (a stateless call), so
//   a block continues ("... ") until it compiles, which for a compound
//   statement means until a blank line.
// - An expression is evaluated and its repr printed (None prints nothing);
//   anything else is executed. Tracebacks go to stderr.
// - Each statement, and the Bind, carries options.timeout as its deadline
//   (DEADLINE_EXCEEDED is reported and the REPL goes on).
// - Ctrl-C while code runs cancels the RPC, which interrupts the Python code;
//   the session and its state are kept. Ctrl-C at the prompt drops the
//   pending input.
// - If the server loses the session (NOT_FOUND, ABORTED), a bound-here
//   session is replaced by a fresh one and the REPL says so; an attached one
//   (options.session) ends the REPL with kExitRpcError.
// options.json is not supported (kExitUsage).
int RunRepl(const CliOptions& options, const std::string& history_file);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLI_REPL_H_
