#include "clients/cpp/fake_pyexec.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/value.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace pyexec {
namespace fakes {

grpc::Status FakePyExec::Bind(grpc::ServerContext*,
                              const v1::BindRequest* request,
                              v1::BindResponse* response) {
  absl::MutexLock lock(&mu_);
  response->set_session(absl::StrCat("s", ++next_session_));
  response->set_idle_timeout_seconds(
      request->idle_timeout_seconds() ? request->idle_timeout_seconds() : 600);
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Unbind(grpc::ServerContext*,
                                const v1::UnbindRequest* request,
                                v1::UnbindResponse*) {
  absl::MutexLock lock(&mu_);
  unbound_.push_back(request->session());
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Eval(grpc::ServerContext* context,
                              const v1::EvalRequest* request,
                              v1::EvalResponse* response) {
  RecordSession(request->session());
  const std::string& code = request->code();
  int status_code = 0;
  if (absl::StartsWith(code, "fail:") &&
      absl::SimpleAtoi(code.substr(5), &status_code)) {
    return grpc::Status(static_cast<grpc::StatusCode>(status_code), "scripted");
  }
  if (code == "raise") {
    v1::PythonError* error = response->mutable_error();
    error->set_type("ZeroDivisionError");
    error->set_message("division by zero");
    error->set_traceback(
        "Traceback (most recent call last):\n  File \"<eval>\", line 1, in "
        "<module>\nZeroDivisionError: division by zero\n");
    return grpc::Status::OK;
  }
  if (code == "print") {
    *response->mutable_value() = MakeNone();
    response->set_stdout("hello\n");
    response->set_stderr("warn\n");
    return grpc::Status::OK;
  }
  if (code == "deadline?") {
    const auto deadline = context->deadline();
    double remaining = -1;
    if (deadline != std::chrono::system_clock::time_point::max()) {
      remaining = std::chrono::duration<double>(
                      deadline - std::chrono::system_clock::now())
                      .count();
    }
    *response->mutable_value() = MakeFloat(remaining);
    return grpc::Status::OK;
  }
  std::vector<std::pair<v1::Value, v1::Value>> entries;
  for (const auto& [k, v] : request->locals()) {
    entries.push_back({MakeStr(k), v});
  }
  *response->mutable_value() = MakeTuple(
      {MakeStr(request->session()), MakeStr(code), MakeDict(std::move(entries))});
  response->set_stdout("out");
  response->set_stderr("err");
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Exec(grpc::ServerContext*,
                              const v1::ExecRequest* request,
                              v1::ExecResponse* response) {
  RecordSession(request->session());
  if (request->code() == "raise") {
    response->mutable_error()->set_type("ValueError");
    response->mutable_error()->set_message("bad");
  }
  response->set_stdout(request->code());
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Call(grpc::ServerContext*,
                              const v1::CallRequest* request,
                              v1::CallResponse* response) {
  RecordSession(request->session());
  std::vector<v1::Value> items = {MakeStr(request->module()),
                                  MakeStr(request->function())};
  for (const v1::Value& arg : request->args()) items.push_back(arg);
  for (const auto& [k, v] : request->kwargs()) {
    items.push_back(MakeTuple({MakeStr(k), v}));
  }
  *response->mutable_value() = MakeList(std::move(items));
  return grpc::Status::OK;
}

grpc::Status FakePyExec::GetStats(grpc::ServerContext*,
                                  const v1::GetStatsRequest*,
                                  v1::GetStatsResponse* response) {
  response->set_num_workers(4);
  response->set_available_workers(3);
  return grpc::Status::OK;
}

std::vector<std::string> FakePyExec::unbound() const {
  absl::MutexLock lock(&mu_);
  return unbound_;
}

std::vector<std::string> FakePyExec::sessions_seen() const {
  absl::MutexLock lock(&mu_);
  return sessions_seen_;
}

void FakePyExec::RecordSession(const std::string& session) {
  absl::MutexLock lock(&mu_);
  sessions_seen_.push_back(session);
}

FakePyExecServer::FakePyExecServer() {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) std::abort();
  address_ = absl::StrCat("127.0.0.1:", port);
}

FakePyExecServer::~FakePyExecServer() { server_->Shutdown(); }

}  // namespace fakes
}  // namespace pyexec
