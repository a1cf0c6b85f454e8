#include "clients/cpp/cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/cli_args.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "clients/cpp/value_json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace pyexec {

const char kCliUsage[] =
    "usage: pyexec [--addr=HOST:PORT] [--timeout=30s] [--session=TOKEN] "
    "[--json] [TLS and token flags] COMMAND\n"
    "commands:\n"
    "  eval CODE                       evaluate an expression, print its repr\n"
    "  exec [--stream] CODE            execute statements; --stream prints\n"
    "                                  output live, as it is written\n"
    "                                  CODE may be - (read stdin) or @FILE\n"
    "  call [--stream] MODULE FUNCTION [ARG...]\n"
    "                                  call MODULE.FUNCTION(*ARGs); each ARG is\n"
    "                                  a Python literal: 42, 2**64, 1.5, nan,\n"
    "                                  None, True, 'str', b'bytes', [3, 1],\n"
    "                                  (1,), 1,2 (a tuple), {'k': 1}, {1, 2};\n"
    "                                  other text is sent as a str as it is\n"
    "                                  (hello, 1.2.3); --str ARG (or --str=ARG)\n"
    "                                  sends that one ARG as a str, whatever\n"
    "                                  it looks like\n"
    "  bind [--idle_timeout=10m]       bind a session, print its token (no lease:\n"
    "                                  it lives until unbind or its idle timeout)\n"
    "  unbind TOKEN                    release a session\n"
    "  interrupt TOKEN                 interrupt the code running on a session\n"
    "                                  (KeyboardInterrupt; state kept)\n"
    "  release TOKEN REF_ID...         drop object references the session holds\n"
    "  snapshot TOKEN FILE             save the session's state to FILE (- for\n"
    "                                  stdout); names it could not save are listed\n"
    "  restore FILE                    bind a new session with the state saved in\n"
    "                                  FILE (- for stdin), print its token\n"
    "  stats                           print pool figures\n"
    "  repl                            interactive session: bound and leased at\n"
    "                                  start, unbound at exit (and by the server\n"
    "                                  soon after the REPL dies); Ctrl-C interrupts\n"
    "                                  the running code, Tab completes, Ctrl-D exits\n"
    "--json prints one JSON object per command on stdout, errors included:\n"
    "  {\"value\": TAGGED, \"stdout\", \"stderr\"} or {\"error\": {\"kind\", ...}}\n"
    "Put -- before arguments that start with '-' (e.g. negative numbers).\n"
    "TLS: --tls [--tls_ca_file=PEM] [--tls_cert_file=PEM --tls_key_file=PEM]\n"
    "  [--tls_server_name=NAME]; a --tls_*_file flag implies --tls.\n"
    "Token: --token_file=PATH, $PYEXEC_TOKEN or --token=TOKEN, sent as\n"
    "  `authorization: Bearer TOKEN` on every call.\n"
    "Exit status: 0 ok, 1 Python exception, 2 RPC error, 64 usage error.\n";

namespace {

// Where a command's output goes, and in which form.
struct Output {
  bool json;
  std::ostream& out;
  std::ostream& err;
};

void PrintJson(const Output& o, const nlohmann::json& json) {
  o.out << DumpJson(json) << "\n";
}

int Usage(const Output& o, absl::string_view problem) {
  if (o.json) {
    PrintJson(o, {{"error", {{"kind", "usage"}, {"message", std::string(problem)}}}});
  }
  o.err << "pyexec: " << problem << "\n" << kCliUsage;
  return kExitUsage;
}

int RpcError(const Output& o, const absl::Status& status) {
  if (o.json) {
    PrintJson(o, {{"error",
                   {{"kind", "status"},
                    {"code", absl::StatusCodeToString(status.code())},
                    {"message", std::string(status.message())}}}});
    return kExitRpcError;
  }
  o.err << "pyexec: " << absl::StatusCodeToString(status.code()) << ": "
        << status.message() << "\n";
  return kExitRpcError;
}

int ReportJson(const Output& o, const Result& result, bool print_value) {
  nlohmann::json json = {{"stdout", result.stdout_text}, {"stderr", result.stderr_text}};
  if (result.error.has_value()) {
    json["error"] = {{"kind", "python_error"},
                     {"type", result.error->type()},
                     {"message", result.error->message()},
                     {"traceback", result.error->traceback()}};
  } else if (print_value) {
    json["value"] = ValueToJson(result.value);
  }
  PrintJson(o, json);
  return result.error.has_value() ? kExitPythonError : kExitOk;
}

// Prints a call's outcome; `print_value` is false for exec.
int Report(const absl::StatusOr<Result>& result, bool print_value, const Output& o) {
  if (!result.ok()) return RpcError(o, result.status());
  if (o.json) return ReportJson(o, *result, print_value);
  std::ostream& out = o.out;
  std::ostream& err = o.err;
  out << result->stdout_text;
  err << result->stderr_text;
  if (result->error.has_value()) {
    const v1::PythonError& e = *result->error;
    if (!e.traceback().empty()) {
      err << e.traceback();
      if (e.traceback().back() != '\n') err << "\n";
    } else {
      err << e.type() << ": " << e.message() << "\n";
    }
    return kExitPythonError;
  }
  if (print_value) out << FormatValue(result->value) << "\n";
  return kExitOk;
}

// Streams a call's events to the terminal as they come: output chunks at
// once (flushed), values (call) one repr per line, then the outcome.
template <typename Run>
int ReportStream(const Output& o, Run run) {
  StreamHandlers handlers;
  if (o.json) {
    handlers.on_stdout = [&](absl::string_view c) {
      PrintJson(o, {{"stdout", std::string(c)}});
      o.out.flush();
    };
    handlers.on_stderr = [&](absl::string_view c) {
      PrintJson(o, {{"stderr", std::string(c)}});
      o.out.flush();
    };
    handlers.on_value = [&](const v1::Value& v) {
      PrintJson(o, {{"value", ValueToJson(v)}});
      o.out.flush();
    };
  } else {
    handlers.on_stdout = [&](absl::string_view c) { o.out << c << std::flush; };
    handlers.on_stderr = [&](absl::string_view c) { o.err << c << std::flush; };
    handlers.on_value = [&](const v1::Value& v) {
      o.out << FormatValue(v) << "\n" << std::flush;
    };
  }
  absl::StatusOr<Result> result = run(handlers);
  if (!result.ok()) return RpcError(o, result.status());
  if (o.json) {
    nlohmann::json end = nlohmann::json::object();
    if (result->error.has_value()) {
      end["error"] = {{"kind", "python_error"},
                      {"type", result->error->type()},
                      {"message", result->error->message()},
                      {"traceback", result->error->traceback()}};
    }
    PrintJson(o, end);
    return result->error.has_value() ? kExitPythonError : kExitOk;
  }
  return Report(*result, /*print_value=*/false, o);
}

// Prints every field of a message, zero-valued ones included, as
// "name: value" lines, so new GetStats figures show up without code changes.
// With `json`, prints one object of the same fields instead.
void PrintFields(const google::protobuf::Message& message, const Output& o) {
  nlohmann::json json = nlohmann::json::object();
  std::ostream& out = o.out;
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) continue;
    nlohmann::json& v = json[field->name()];
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
        v = reflection->GetUInt32(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64:
        v = reflection->GetUInt64(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        v = reflection->GetInt32(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
        v = reflection->GetInt64(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
        v = reflection->GetDouble(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL:
        v = reflection->GetBool(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
        v = reflection->GetString(message, field);
        break;
      default:
        v = absl::StrCat("(", field->type_name(), ")");
        break;
    }
    if (!o.json) {
      out << field->name() << ": "
          << (v.is_string() ? v.get<std::string>() : DumpJson(v)) << "\n";
    }
  }
  if (o.json) PrintJson(o, json);
}

// The whole file at `path`; INVALID_ARGUMENT naming the path and the reason
// if it cannot be read (a directory included).
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string contents;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", path, ": ", std::strerror(saved)));
    }
    contents.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return contents;
}

// The code of eval/exec given as `arg`: the text itself; all of `in` for
// "-"; the contents of FILE for "@FILE". An argument that starts with '@'
// but spans lines is code: single-line Python cannot start with '@' (a
// decorator needs its def on the next line), so "@FILE" never hides code.
// A UTF-8 byte order mark is dropped, as Python does for source files.
// INVALID_ARGUMENT if the file cannot be read or the code is not UTF-8.
absl::StatusOr<std::string> ReadCode(const std::string& arg, std::istream& in) {
  std::string code;
  std::string from;
  if (arg == "-") {
    std::stringstream contents;
    contents << in.rdbuf();
    code = contents.str();
    from = "stdin";
  } else if (!arg.empty() && arg[0] == '@' && arg.find('\n') == std::string::npos) {
    const std::string path = arg.substr(1);
    absl::StatusOr<std::string> contents = ReadFile(path);
    if (!contents.ok()) return contents.status();
    code = *std::move(contents);
    from = path;
  } else {
    return arg;
  }
  if (absl::StartsWith(code, "\xef\xbb\xbf")) code.erase(0, 3);
  if (!IsValidUtf8(code)) {
    return absl::InvalidArgumentError(absl::StrCat("the code in ", from, " is not UTF-8"));
  }
  return code;
}

// Writes `contents` to the file at `path` (created or truncated, mode 0600:
// a snapshot is user data). INVALID_ARGUMENT naming the path on failure.
absl::Status WriteFile(const std::string& path, const std::string& contents) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": ", std::strerror(saved)));
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

template <typename Names>
nlohmann::json LostJson(const Names& lost) {
  nlohmann::json json = nlohmann::json::array();
  for (const v1::LostName& name : lost) {
    json.push_back({{"name", name.name()}, {"type", name.type()}, {"reason", name.reason()}});
  }
  return json;
}

// One "pyexec: WHAT: NAME (TYPE): REASON" line per lost name.
template <typename Names>
void PrintLost(std::ostream& err, absl::string_view what, const Names& lost) {
  for (const v1::LostName& name : lost) {
    err << "pyexec: " << what << ": " << name.name();
    if (!name.type().empty()) err << " (" << name.type() << ")";
    if (!name.reason().empty()) err << ": " << name.reason();
    err << "\n";
  }
}

}  // namespace

absl::StatusOr<std::string> ResolveToken(const std::string& flag_token,
                                         const std::string& token_file,
                                         const char* env_token) {
  if (!flag_token.empty() && !token_file.empty()) {
    return absl::InvalidArgumentError("give --token or --token_file, not both");
  }
  if (!flag_token.empty()) return flag_token;
  if (!token_file.empty()) {
    std::ifstream in(token_file, std::ios::binary);
    if (!in.is_open()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open --token_file ", token_file));
    }
    std::stringstream contents;
    contents << in.rdbuf();
    // Files made with `echo` end in a newline that is not part of the token.
    std::string token(absl::StripAsciiWhitespace(contents.str()));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token_file ", token_file, " holds no token"));
    }
    return token;
  }
  return std::string(env_token != nullptr ? env_token : "");
}

int RunCli(const CliOptions& options, const std::vector<std::string>& args,
           std::istream& in, std::ostream& out, std::ostream& err) {
  const Output o{options.json, out, err};
  if (args.empty()) return Usage(o, "missing command");
  const std::string& command = args[0];
  const size_t nargs = args.size() - 1;

  absl::StatusOr<Client> client = Client::Connect(options.addr, options.channel);
  if (!client.ok()) return Usage(o, client.status().message());
  const CallOptions call_options{options.timeout};

  if (command == "eval" || command == "exec") {
    if (nargs != 1) return Usage(o, command + " takes exactly one CODE argument");
    if (command == "eval" && options.stream) return Usage(o, "--stream is for exec and call");
    absl::StatusOr<std::string> code = ReadCode(args[1], in);
    if (!code.ok()) return Usage(o, code.status().message());
    if (command == "eval") {
      return Report(client->Eval(options.session, *code, {}, call_options),
                    /*print_value=*/true, o);
    }
    // An empty file runs nothing and succeeds, as with python3; the server
    // refuses empty code, so send a statement that does nothing.
    if (code->empty()) *code = "pass";
    if (options.stream) {
      return ReportStream(o, [&](const StreamHandlers& handlers) {
        return client->RunExecStream(options.session, *code, handlers, {},
                                     call_options);
      });
    }
    return Report(client->Exec(options.session, *code, {}, call_options),
                  /*print_value=*/false, o);
  }
  if (command == "call") {
    if (nargs < 2) return Usage(o, "call takes MODULE FUNCTION [ARG...]");
    absl::StatusOr<std::vector<v1::Value>> call_args =
        ParseCallArgs(std::vector<std::string>(args.begin() + 3, args.end()));
    if (!call_args.ok()) return Usage(o, call_args.status().message());
    if (options.stream) {
      return ReportStream(o, [&](const StreamHandlers& handlers) {
        return client->RunCallStream(options.session, args[1], args[2],
                                     handlers, *call_args, {}, call_options);
      });
    }
    return Report(client->Call(options.session, args[1], args[2], *call_args, {},
                               call_options),
                  /*print_value=*/true, o);
  }
  if (command == "bind") {
    if (nargs != 0) return Usage(o, "bind takes no arguments");
    // The token outlives this process: no lease.
    BindOptions bind;
    bind.idle_timeout = options.idle_timeout;
    bind.lease = false;
    absl::StatusOr<BindResult> bound = client->Bind(bind, call_options);
    if (!bound.ok()) return RpcError(o, bound.status());
    if (o.json) {
      PrintJson(o, {{"session", bound->session},
                    {"idle_timeout_seconds", absl::ToInt64Seconds(bound->idle_timeout)}});
    } else {
      out << bound->session << "\n";
    }
    return kExitOk;
  }
  if (command == "unbind") {
    if (nargs != 1) return Usage(o, "unbind takes exactly one TOKEN");
    absl::Status status = client->Unbind(args[1], call_options);
    if (!status.ok()) return RpcError(o, status);
    if (o.json) PrintJson(o, nlohmann::json::object());
    return kExitOk;
  }
  if (command == "interrupt") {
    if (nargs != 1) return Usage(o, "interrupt takes exactly one TOKEN");
    absl::StatusOr<bool> interrupted = client->Interrupt(args[1], call_options);
    if (!interrupted.ok()) return RpcError(o, interrupted.status());
    if (o.json) {
      PrintJson(o, {{"interrupted", *interrupted}});
    } else {
      out << (*interrupted ? "interrupted" : "nothing was running") << "\n";
    }
    return kExitOk;
  }
  if (command == "release") {
    if (nargs < 2) return Usage(o, "release takes TOKEN REF_ID...");
    absl::StatusOr<uint32_t> released = client->ReleaseRefs(
        args[1], std::vector<std::string>(args.begin() + 2, args.end()), call_options);
    if (!released.ok()) return RpcError(o, released.status());
    if (o.json) {
      PrintJson(o, {{"released", *released}});
    } else {
      out << *released << "\n";
    }
    return kExitOk;
  }
  if (command == "snapshot") {
    if (nargs != 2) return Usage(o, "snapshot takes TOKEN FILE");
    const std::string& file = args[2];
    if (file == "-" && o.json) return Usage(o, "snapshot to stdout (-) cannot print --json");
    absl::StatusOr<v1::SnapshotResponse> snap = client->Snapshot(args[1], call_options);
    if (!snap.ok()) return RpcError(o, snap.status());
    if (file == "-") {
      out.write(snap->blob().data(), static_cast<std::streamsize>(snap->blob().size()));
      out.flush();
    } else if (absl::Status written = WriteFile(file, snap->blob()); !written.ok()) {
      return Usage(o, written.message());
    }
    if (o.json) {
      PrintJson(o, {{"bytes", snap->blob().size()},
                    {"modules", std::vector<std::string>(snap->modules().begin(),
                                                         snap->modules().end())},
                    {"refs", snap->refs()},
                    {"lost", LostJson(snap->lost())}});
      return kExitOk;
    }
    // With FILE "-" stdout holds the blob alone: the summary goes to stderr.
    std::ostream& summary = file == "-" ? err : out;
    summary << snap->blob().size() << " bytes, " << snap->modules_size() << " modules, "
            << snap->refs() << " refs\n";
    PrintLost(err, "not saved", snap->lost());
    return kExitOk;
  }
  if (command == "restore") {
    if (nargs != 1) return Usage(o, "restore takes FILE");
    std::string blob;
    if (args[1] == "-") {
      std::stringstream contents;
      contents << in.rdbuf();
      blob = contents.str();
    } else {
      absl::StatusOr<std::string> contents = ReadFile(args[1]);
      if (!contents.ok()) return Usage(o, contents.status().message());
      blob = *std::move(contents);
    }
    if (blob.empty()) return Usage(o, absl::StrCat(args[1], " holds no snapshot"));
    BindOptions bind;
    bind.idle_timeout = options.idle_timeout;
    bind.lease = false;
    bind.restore = std::move(blob);
    absl::StatusOr<BindResult> bound = client->Bind(bind, call_options);
    if (!bound.ok()) return RpcError(o, bound.status());
    if (o.json) {
      nlohmann::json json = {{"session", bound->session},
                             {"idle_timeout_seconds", absl::ToInt64Seconds(bound->idle_timeout)},
                             {"restore_lost", LostJson(bound->restore_lost)}};
      if (bound->restore_error.has_value()) {
        json["restore_error"] = {{"type", bound->restore_error->type()},
                                 {"message", bound->restore_error->message()}};
      }
      PrintJson(o, json);
      return kExitOk;
    }
    out << bound->session << "\n";
    PrintLost(err, "not restored", bound->restore_lost);
    if (bound->restore_error.has_value()) {
      err << "pyexec: __pyexec_restore__() raised " << bound->restore_error->type() << ": "
          << bound->restore_error->message() << " (the state is restored)\n";
    }
    return kExitOk;
  }
  if (command == "stats") {
    if (nargs != 0) return Usage(o, "stats takes no arguments");
    absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats(call_options);
    if (!stats.ok()) return RpcError(o, stats.status());
    PrintFields(*stats, o);
    return kExitOk;
  }
  return Usage(o, absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace pyexec
