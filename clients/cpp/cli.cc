#include "clients/cpp/cli.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/cli_args.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace pyexec {

const char kCliUsage[] =
    "usage: pyexec [--addr=HOST:PORT] [--timeout=30s] [--session=TOKEN] "
    "COMMAND\n"
    "commands:\n"
    "  eval CODE                       evaluate an expression, print its repr\n"
    "  exec CODE                       execute statements\n"
    "  call MODULE FUNCTION [ARG...]   call MODULE.FUNCTION(*ARGs); each ARG is\n"
    "                                  None/True/False, an int, a float, a\n"
    "                                  quoted 'str' or b'bytes', else a str\n"
    "  bind [--idle_timeout=10m]       bind a session, print its token\n"
    "  unbind TOKEN                    release a session\n"
    "  stats                           print pool figures\n"
    "Put -- before arguments that start with '-' (e.g. negative numbers).\n"
    "Exit status: 0 ok, 1 Python exception, 2 RPC error, 64 usage error.\n";

namespace {

int Usage(std::ostream& err, absl::string_view problem) {
  err << "pyexec: " << problem << "\n" << kCliUsage;
  return kExitUsage;
}

int RpcError(std::ostream& err, const absl::Status& status) {
  err << "pyexec: " << absl::StatusCodeToString(status.code()) << ": "
      << status.message() << "\n";
  return kExitRpcError;
}

// Prints a call's outcome; `print_value` is false for exec.
int Report(const absl::StatusOr<Result>& result, bool print_value,
           std::ostream& out, std::ostream& err) {
  if (!result.ok()) return RpcError(err, result.status());
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

// Prints every field of a message, zero-valued ones included, as
// "name: value" lines, so new GetStats figures show up without code changes.
void PrintFields(const google::protobuf::Message& message, std::ostream& out) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) continue;
    out << field->name() << ": ";
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
        out << reflection->GetUInt32(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64:
        out << reflection->GetUInt64(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        out << reflection->GetInt32(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
        out << reflection->GetInt64(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
        out << reflection->GetDouble(message, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL:
        out << (reflection->GetBool(message, field) ? "true" : "false");
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
        out << reflection->GetString(message, field);
        break;
      default:
        out << "(" << field->type_name() << ")";
        break;
    }
    out << "\n";
  }
}

}  // namespace

int RunCli(const CliOptions& options, const std::vector<std::string>& args,
           std::ostream& out, std::ostream& err) {
  if (args.empty()) return Usage(err, "missing command");
  const std::string& command = args[0];
  const size_t nargs = args.size() - 1;

  absl::StatusOr<Client> client = Client::Connect(options.addr);
  if (!client.ok()) return Usage(err, client.status().message());
  const CallOptions call_options{options.timeout};

  if (command == "eval" || command == "exec") {
    if (nargs != 1) return Usage(err, command + " takes exactly one CODE argument");
    if (command == "eval") {
      return Report(client->Eval(options.session, args[1], {}, call_options),
                    /*print_value=*/true, out, err);
    }
    return Report(client->Exec(options.session, args[1], {}, call_options),
                  /*print_value=*/false, out, err);
  }
  if (command == "call") {
    if (nargs < 2) return Usage(err, "call takes MODULE FUNCTION [ARG...]");
    std::vector<v1::Value> call_args;
    for (size_t i = 3; i < args.size(); ++i) {
      absl::StatusOr<v1::Value> v = ParseLiteralArg(args[i]);
      if (!v.ok()) return Usage(err, v.status().message());
      call_args.push_back(*std::move(v));
    }
    return Report(client->Call(options.session, args[1], args[2], call_args, {},
                               call_options),
                  /*print_value=*/true, out, err);
  }
  if (command == "bind") {
    if (nargs != 0) return Usage(err, "bind takes no arguments");
    absl::StatusOr<BindResult> bound =
        client->Bind(options.idle_timeout, call_options);
    if (!bound.ok()) return RpcError(err, bound.status());
    out << bound->session << "\n";
    return kExitOk;
  }
  if (command == "unbind") {
    if (nargs != 1) return Usage(err, "unbind takes exactly one TOKEN");
    absl::Status status = client->Unbind(args[1], call_options);
    if (!status.ok()) return RpcError(err, status);
    return kExitOk;
  }
  if (command == "stats") {
    if (nargs != 0) return Usage(err, "stats takes no arguments");
    absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats(call_options);
    if (!stats.ok()) return RpcError(err, stats.status());
    PrintFields(*stats, out);
    return kExitOk;
  }
  return Usage(err, absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace pyexec
