#include "clients/cpp/fake_pyexec.h"

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/value.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace pyexec {
namespace fakes {

grpc::Status FakePyExec::Bind(grpc::ServerContext* context,
                              const v1::BindRequest* request,
                              v1::BindResponse* response) {
  RecordCall("Bind", *context);
  absl::MutexLock lock(&mu_);
  response->set_session(absl::StrCat("s", ++next_session_));
  response->set_idle_timeout_seconds(
      request->idle_timeout_seconds() ? request->idle_timeout_seconds() : 600);
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Unbind(grpc::ServerContext* context,
                                const v1::UnbindRequest* request,
                                v1::UnbindResponse*) {
  RecordCall("Unbind", *context);
  absl::MutexLock lock(&mu_);
  unbound_.push_back(request->session());
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Eval(grpc::ServerContext* context,
                              const v1::EvalRequest* request,
                              v1::EvalResponse* response) {
  RecordCall("Eval", *context);
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

grpc::Status FakePyExec::Exec(grpc::ServerContext* context,
                              const v1::ExecRequest* request,
                              v1::ExecResponse* response) {
  RecordCall("Exec", *context);
  RecordSession(request->session());
  if (request->code() == "raise") {
    response->mutable_error()->set_type("ValueError");
    response->mutable_error()->set_message("bad");
  }
  response->set_stdout(request->code());
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Call(grpc::ServerContext* context,
                              const v1::CallRequest* request,
                              v1::CallResponse* response) {
  RecordCall("Call", *context);
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

grpc::Status FakePyExec::GetStats(grpc::ServerContext* context,
                                  const v1::GetStatsRequest*,
                                  v1::GetStatsResponse* response) {
  RecordCall("GetStats", *context);
  response->set_num_workers(4);
  response->set_available_workers(3);
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Interrupt(grpc::ServerContext* context,
                                   const v1::InterruptRequest* request,
                                   v1::InterruptResponse* response) {
  RecordCall("Interrupt", *context);
  RecordSession(request->session());
  if (absl::StartsWith(request->session(), "gone")) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown session");
  }
  response->set_interrupted(absl::StartsWith(request->session(), "busy"));
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Release(grpc::ServerContext* context,
                                 const v1::ReleaseRequest* request,
                                 v1::ReleaseResponse* response) {
  RecordCall("Release", *context);
  RecordSession(request->session());
  if (absl::StartsWith(request->session(), "gone")) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown session");
  }
  uint32_t live = 0;
  for (const std::string& id : request->ref_ids()) {
    if (absl::StartsWith(id, "live")) ++live;
  }
  response->set_released(live);
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

std::vector<RecordedCall> FakePyExec::calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

void FakePyExec::RecordCall(const std::string& method,
                            const grpc::ServerContext& context) {
  RecordedCall call;
  call.method = method;
  for (const auto& [key, value] : context.client_metadata()) {
    call.metadata.emplace(std::string(key.data(), key.size()),
                          std::string(value.data(), value.size()));
  }
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr) {
    for (const grpc::string_ref& cn :
         auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
      call.peer_common_name.assign(cn.data(), cn.size());
    }
  }
  absl::MutexLock lock(&mu_);
  calls_.push_back(std::move(call));
}

void FakePyExec::RecordSession(const std::string& session) {
  absl::MutexLock lock(&mu_);
  sessions_seen_.push_back(session);
}

FakePyExecServer::FakePyExecServer() : FakePyExecServer(std::nullopt) {}

FakePyExecServer::FakePyExecServer(const std::optional<FakeTls>& tls) {
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (tls.has_value()) {
    grpc::SslServerCredentialsOptions ssl(
        tls->client_ca_pem.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = tls->client_ca_pem;
    ssl.pem_key_cert_pairs.push_back({tls->key_pem, tls->cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", credentials, &port);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) std::abort();
  address_ = absl::StrCat("127.0.0.1:", port);
}

FakePyExecServer::~FakePyExecServer() { server_->Shutdown(); }

}  // namespace fakes
}  // namespace pyexec
