// pyexec: command-line client for a pyexec server. See cli.h for commands.

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "clients/cpp/cli.h"
#include "clients/cpp/cli_args.h"
#include "clients/cpp/cli_repl.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "pyexec server, HOST:PORT");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each RPC (e.g. 500ms, 30s); 0 sends none and the "
          "server default applies");
ABSL_FLAG(std::string, session, "",
          "session token for eval/exec/call; empty runs on a pooled "
          "interpreter");
ABSL_FLAG(absl::Duration, idle_timeout, absl::ZeroDuration(),
          "bind: idle timeout to ask for; 0 means the server default");
ABSL_FLAG(bool, json, false,
          "print one JSON object per command on stdout (values in the tagged "
          "form of clients/conformance/README.md, errors as {\"error\": ...})");
ABSL_FLAG(bool, stream, false,
          "exec/call: print output (and call's values) live, as the server "
          "streams them");
ABSL_FLAG(std::string, history_file, "",
          "repl: line history file; empty means $HOME/.pyexec_history, "
          "\"none\" keeps no history");
ABSL_FLAG(bool, tls, false,
          "connect with TLS; the --tls_*_file flags turn it on too");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM roots that verify the server; empty means gRPC's default "
          "roots");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate chain for mutual TLS (with --tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "",
          "name to check in the server's certificate instead of the host in "
          "--addr");
ABSL_FLAG(std::string, token, "",
          "bearer token sent as `authorization: Bearer TOKEN` (visible in ps: "
          "prefer --token_file or $PYEXEC_TOKEN)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token (surrounding whitespace ignored)");

namespace {

// The command line split the way absl::ParseCommandLine would split it,
// except that `--str ARG` (anywhere before --) goes to the positional
// arguments as two entries, in place, whatever ARG looks like, and
// `--str=ARG` as one: `call` interprets the marker (see ParseCallArgs), and
// absl must neither reject --str as an unknown flag nor take an ARG such as
// -3 for a flag.
struct SplitArgs {
  // argv[0] and the flag arguments (with their separate values), for absl.
  std::vector<char*> flags;
  // The positional arguments, in order, --str markers included.
  std::vector<std::string> positional;
  // Empty, or why the command line is wrong.
  std::string problem;
};

// absl::ParseCommandLine exits with status 1 on an unknown flag or a bad
// value; the CLI promises 64 for usage errors, so every flag is checked
// here first.
SplitArgs Split(int argc, char** argv) {
  SplitArgs split;
  split.flags.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      split.positional.insert(split.positional.end(), argv + i + 1, argv + argc);
      break;
    }
    if (arg == pyexec::kStrMarker) {
      split.positional.emplace_back(arg);
      if (i + 1 < argc) split.positional.emplace_back(argv[++i]);
      continue;
    }
    if (absl::StartsWith(arg, absl::StrCat(pyexec::kStrMarker, "="))) {
      split.positional.emplace_back(arg);
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      split.positional.emplace_back(arg);
      continue;
    }
    split.flags.push_back(argv[i]);
    absl::string_view body = absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    const size_t eq = body.find('=');
    absl::string_view name = body.substr(0, eq);
    if (absl::StartsWith(name, "help") || name == "version" ||
        name == "flagfile" || name == "fromenv" || name == "tryfromenv" ||
        name == "undefok") {
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && eq == body.npos) {
      // --nofoo for a bool flag foo.
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) {
      // Only the name: a mistyped --token=... must not echo the secret.
      split.problem = absl::StrCat("unknown flag --", name,
                                   " (put -- before arguments that start with '-')");
      return split;
    }
    if (eq == body.npos) {
      if (flag->IsOfType<bool>()) continue;
      // "--flag value" form: absl takes the next argument as the value.
      if (++i == argc) {
        split.problem = absl::StrCat("missing value for ", arg);
        return split;
      }
      split.flags.push_back(argv[i]);
    }
    std::string value(eq == body.npos ? argv[i] : body.substr(eq + 1));
    std::string error;
    // A scratch parse: the real one below sets the same value again.
    if (!flag->ParseFrom(value, &error)) {
      split.problem = absl::StrCat("bad value for --", name, ": ", error);
      return split;
    }
  }
  return split;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(pyexec::kCliUsage);
  SplitArgs split = Split(argc, argv);
  if (!split.problem.empty()) {
    std::cerr << "pyexec: " << split.problem << "\n" << pyexec::kCliUsage;
    return pyexec::kExitUsage;
  }
  absl::ParseCommandLine(static_cast<int>(split.flags.size()), split.flags.data());
  pyexec::CliOptions options;
  options.addr = absl::GetFlag(FLAGS_addr);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.session = absl::GetFlag(FLAGS_session);
  options.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.json = absl::GetFlag(FLAGS_json);
  options.channel.tls = absl::GetFlag(FLAGS_tls);
  options.channel.root_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  options.channel.client_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.channel.client_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.channel.server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  absl::StatusOr<std::string> token =
      pyexec::ResolveToken(absl::GetFlag(FLAGS_token),
                           absl::GetFlag(FLAGS_token_file), std::getenv("PYEXEC_TOKEN"));
  if (!token.ok()) {
    std::cerr << "pyexec: " << token.status().message() << "\n";
    return pyexec::kExitUsage;
  }
  options.channel.token = *std::move(token);
  options.stream = absl::GetFlag(FLAGS_stream);
  const std::vector<std::string>& args = split.positional;
  if (!args.empty() && args[0] == "repl") {
    if (args.size() != 1) {
      std::cerr << "pyexec: repl takes no arguments\n" << pyexec::kCliUsage;
      return pyexec::kExitUsage;
    }
    std::string history = absl::GetFlag(FLAGS_history_file);
    if (history.empty()) {
      const char* home = std::getenv("HOME");
      if (home != nullptr && *home != '\0') history = absl::StrCat(home, "/.pyexec_history");
    } else if (history == "none") {
      history.clear();
    }
    return pyexec::RunRepl(options, history);
  }
  const int code = pyexec::RunCli(options, args, std::cin, std::cout, std::cerr);
  std::cout.flush();
  return code;
}
