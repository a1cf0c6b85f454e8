#include "clients/cpp/cli.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
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
    "  exec CODE                       execute statements\n"
    "  exec --stream CODE              print output live, as it is written\n"
    "  call [--stream] MODULE FUNCTION [ARG...]\n"
    "                                  call MODULE.FUNCTION(*ARGs); each ARG is\n"
    "                                  None/True/False, an int, a float, a\n"
    "                                  quoted 'str' or b'bytes', else a str\n"
    "  bind [--idle_timeout=10m]       bind a session, print its token\n"
    "  unbind TOKEN                    release a session\n"
    "  stats                           print pool figures\n"
    "  repl                            interactive session: bound at start,\n"
    "                                  unbound at exit; Ctrl-C interrupts the\n"
    "                                  running code, Ctrl-D exits\n"
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
           std::ostream& out, std::ostream& err) {
  const Output o{options.json, out, err};
  if (args.empty()) return Usage(o, "missing command");
  const std::string& command = args[0];
  const size_t nargs = args.size() - 1;

  absl::StatusOr<Client> client = Client::Connect(options.addr, options.channel);
  if (!client.ok()) return Usage(o, client.status().message());
  const CallOptions call_options{options.timeout};

  if (command == "eval" || command == "exec") {
    if (nargs != 1) return Usage(o, command + " takes exactly one CODE argument");
    if (command == "eval") {
      if (options.stream) return Usage(o, "--stream is for exec and call");
      return Report(client->Eval(options.session, args[1], {}, call_options),
                    /*print_value=*/true, o);
    }
    if (options.stream) {
      return ReportStream(o, [&](const StreamHandlers& handlers) {
        return client->RunExecStream(options.session, args[1], handlers, {},
                                     call_options);
      });
    }
    return Report(client->Exec(options.session, args[1], {}, call_options),
                  /*print_value=*/false, o);
  }
  if (command == "call") {
    if (nargs < 2) return Usage(o, "call takes MODULE FUNCTION [ARG...]");
    std::vector<v1::Value> call_args;
    for (size_t i = 3; i < args.size(); ++i) {
      absl::StatusOr<v1::Value> v = ParseLiteralArg(args[i]);
      if (!v.ok()) return Usage(o, v.status().message());
      call_args.push_back(*std::move(v));
    }
    if (options.stream) {
      return ReportStream(o, [&](const StreamHandlers& handlers) {
        return client->RunCallStream(options.session, args[1], args[2],
                                     handlers, call_args, {}, call_options);
      });
    }
    return Report(client->Call(options.session, args[1], args[2], call_args, {},
                               call_options),
                  /*print_value=*/true, o);
  }
  if (command == "bind") {
    if (nargs != 0) return Usage(o, "bind takes no arguments");
    absl::StatusOr<BindResult> bound =
        client->Bind(options.idle_timeout, call_options);
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
