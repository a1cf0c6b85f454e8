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
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
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
  response->set_owner(owner_);
  if (!request->restore().empty()) {
    if (!absl::StartsWith(request->restore(), "snap:")) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "not a snapshot");
    }
    response->add_restore_lost()->set_name("gone_module");
  }
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
  {
    absl::MutexLock lock(&mu_);
    if (!owner_header_.empty()) context->AddInitialMetadata("x-pyexec-owner", owner_header_);
  }
  const std::string& code = request->code();
  int status_code = 0;
  if (absl::StartsWith(code, "fail:") &&
      absl::SimpleAtoi(code.substr(5), &status_code)) {
    return grpc::Status(static_cast<grpc::StatusCode>(status_code), "scripted");
  }
  if (absl::StartsWith(code, "once:")) {
    std::vector<std::string> parts = absl::StrSplit(code, ':');
    absl::MutexLock lock(&mu_);
    if (parts.size() == 3 && absl::SimpleAtoi(parts[1], &status_code) &&
        failed_once_[code]++ == 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(status_code), "CANCELLED");
    }
  }
  if (code == "sleep") {
    WaitForCancel(context, absl::Seconds(30));
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
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
  {
    absl::MutexLock lock(&mu_);
    interrupt_call_ids_.push_back(request->call_id());
  }
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

grpc::Status FakePyExec::Attach(grpc::ServerContext* context,
                                const v1::AttachRequest* request,
                                grpc::ServerWriter<v1::AttachEvent>* writer) {
  RecordCall("Attach", *context);
  const std::string& session = request->session();
  if (absl::StartsWith(session, "gone")) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown session");
  }
  int attach;
  {
    absl::MutexLock lock(&mu_);
    attach = ++attaches_[session];
    ++open_leases_[session];
  }
  v1::AttachEvent attached;
  attached.mutable_attached()->set_grace_seconds(1);
  writer->Write(attached);
  grpc::Status status = grpc::Status::OK;
  if (absl::StartsWith(session, "moved") && attach == 1) {
    absl::SleepFor(absl::Milliseconds(50));
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the session moved");
  } else if (absl::StartsWith(session, "ends")) {
    absl::SleepFor(absl::Milliseconds(50));
    v1::AttachEvent ended;
    ended.mutable_ended()->set_reason("unbound");
    writer->Write(ended);
  } else {
    WaitForCancel(context, absl::InfiniteDuration());
    status = grpc::Status(grpc::StatusCode::CANCELLED, "lease cancelled");
  }
  absl::MutexLock lock(&mu_);
  --open_leases_[session];
  return status;
}

grpc::Status FakePyExec::Run(grpc::ServerContext* context,
                             grpc::ServerReaderWriter<v1::RunEvent, v1::RunRequest>* stream) {
  RecordCall("Run", *context);
  v1::RunRequest first;
  if (!stream->Read(&first)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request");
  }
  v1::RunEvent response;
  if (first.has_eval() && absl::StartsWith(first.eval().code(), "cb ")) {
    RecordSession(first.eval().session());
    std::vector<std::string> names =
        absl::StrSplit(first.eval().code().substr(3), ' ', absl::SkipEmpty());
    for (size_t i = 0; i < names.size(); ++i) {
      v1::RunEvent ask;
      ask.mutable_callback()->set_id(absl::StrCat("cb", i + 1));
      ask.mutable_callback()->set_name(names[i]);
      auto x = first.eval().locals().find("x");
      if (x != first.eval().locals().end()) *ask.mutable_callback()->add_args() = x->second;
      stream->Write(ask);
    }
    std::vector<v1::Value> outcomes(names.size());
    for (size_t answered = 0; answered < names.size(); ++answered) {
      v1::RunRequest answer;
      if (!stream->Read(&answer) || !answer.has_callback_result()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected a callback result");
      }
      const v1::CallbackResult& result = answer.callback_result();
      size_t index = 0;
      if (!absl::StartsWith(result.id(), "cb") ||
          !absl::SimpleAtoi(result.id().substr(2), &index) || index < 1 ||
          index > names.size()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unknown callback id");
      }
      outcomes[index - 1] = result.has_error()
                                ? MakeStr(absl::StrCat("error ", result.error().type(), ": ",
                                                       result.error().message()))
                                : result.value();
    }
    *response.mutable_eval()->mutable_value() = MakeList(std::move(outcomes));
  } else if (first.has_eval()) {
    grpc::Status status = Eval(context, &first.eval(), response.mutable_eval());
    if (!status.ok()) return status;
  } else if (first.has_exec()) {
    grpc::Status status = Exec(context, &first.exec(), response.mutable_exec());
    if (!status.ok()) return status;
  } else if (first.has_call()) {
    grpc::Status status = Call(context, &first.call(), response.mutable_call());
    if (!status.ok()) return status;
  } else {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no call first");
  }
  stream->Write(response);
  v1::RunRequest extra;
  if (!stream->Read(&extra)) {
    absl::MutexLock lock(&mu_);
    ++run_half_closes_;
  }
  return grpc::Status::OK;
}

grpc::Status FakePyExec::Snapshot(grpc::ServerContext* context,
                                  const v1::SnapshotRequest* request,
                                  v1::SnapshotResponse* response) {
  RecordCall("Snapshot", *context);
  RecordSession(request->session());
  if (absl::StartsWith(request->session(), "gone")) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown session");
  }
  response->set_blob(absl::StrCat("snap:", request->session()));
  v1::LostName* lost = response->add_lost();
  lost->set_name("sock");
  lost->set_type("socket.socket");
  lost->set_reason("cannot pickle 'socket' object");
  response->add_modules("json");
  return grpc::Status::OK;
}

void FakePyExec::set_owner(const std::string& owner) {
  absl::MutexLock lock(&mu_);
  owner_ = owner;
}

void FakePyExec::set_owner_header(const std::string& owner) {
  absl::MutexLock lock(&mu_);
  owner_header_ = owner;
}

int FakePyExec::open_leases(const std::string& session) const {
  absl::MutexLock lock(&mu_);
  auto it = open_leases_.find(session);
  return it == open_leases_.end() ? 0 : it->second;
}

int FakePyExec::attaches(const std::string& session) const {
  absl::MutexLock lock(&mu_);
  auto it = attaches_.find(session);
  return it == attaches_.end() ? 0 : it->second;
}

std::vector<std::string> FakePyExec::interrupt_call_ids() const {
  absl::MutexLock lock(&mu_);
  return interrupt_call_ids_;
}

int FakePyExec::run_half_closes() const {
  absl::MutexLock lock(&mu_);
  return run_half_closes_;
}

void FakePyExec::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

bool FakePyExec::stopped() const {
  absl::MutexLock lock(&mu_);
  return stopped_;
}

bool FakePyExec::WaitForCancel(grpc::ServerContext* context, absl::Duration max) {
  const absl::Time until = absl::Now() + max;
  while (!context->IsCancelled() && absl::Now() < until) {
    if (stopped()) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
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

FakePyExecServer::~FakePyExecServer() {
  service_.Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace fakes
}  // namespace pyexec
