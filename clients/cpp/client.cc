#include "clients/cpp/client.h"

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/status_util.h"
#include "clients/cpp/value.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_interceptor.h"

namespace pyexec {
namespace {

// How long a Session's destructor waits for its Unbind.
constexpr absl::Duration kDestructorUnbindTimeout = absl::Seconds(5);

void ApplyOptions(const CallOptions& options, grpc::ClientContext* context) {
  if (options.timeout > absl::ZeroDuration() &&
      options.timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  }
}

void CopyMap(const ValueMap& from,
             google::protobuf::Map<std::string, v1::Value>* to) {
  for (const auto& [name, value] : from) (*to)[name] = value;
}

// The CallRequest of Call, CallMethod and CallStream: `function` of `module`
// (or of the object `target_ref` names) with these arguments.
v1::CallRequest MakeCallRequest(absl::string_view session,
                                absl::string_view module,
                                absl::string_view target_ref,
                                absl::string_view function,
                                const std::vector<v1::Value>& args,
                                const ValueMap& kwargs,
                                const CallOptions& options) {
  v1::CallRequest request;
  request.set_session(std::string(session));
  request.set_module(std::string(module));
  request.set_target_ref(std::string(target_ref));
  request.set_function(std::string(function));
  for (const v1::Value& arg : args) *request.add_args() = arg;
  CopyMap(kwargs, request.mutable_kwargs());
  request.set_result_as_ref(options.result_as_ref);
  return request;
}

// Eval and Call responses have the same shape.
template <typename Response>
Result ToResult(Response& response) {
  Result result;
  if (response.has_error()) {
    result.error = std::move(*response.mutable_error());
  } else {
    result.value = std::move(*response.mutable_value());
  }
  result.stdout_text = std::move(*response.mutable_stdout());
  result.stderr_text = std::move(*response.mutable_stderr());
  return result;
}

// A released or moved-from Session must not fall back to a pooled
// interpreter, which an empty token would mean.
absl::Status ReleasedError() {
  return absl::FailedPreconditionError("session was released or moved from");
}

using Metadata = std::vector<std::pair<std::string, std::string>>;

// Adds the channel's metadata to every call. An interceptor rather than
// grpc::CallCredentials because gRPC refuses call credentials on a plaintext
// channel, and a token on loopback without TLS is a supported setup; it also
// covers calls made on the raw stub (the REPL's cancellable calls, benches).
class MetadataInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit MetadataInterceptor(std::shared_ptr<const Metadata> metadata)
      : metadata_(std::move(metadata)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      std::multimap<std::string, std::string>* sent =
          methods->GetSendInitialMetadata();
      for (const auto& [key, value] : *metadata_) sent->emplace(key, value);
    }
    methods->Proceed();
  }

 private:
  std::shared_ptr<const Metadata> metadata_;
};

class MetadataInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit MetadataInterceptorFactory(std::shared_ptr<const Metadata> metadata)
      : metadata_(std::move(metadata)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new MetadataInterceptor(metadata_);
  }

 private:
  std::shared_ptr<const Metadata> metadata_;
};

// `pem` if set, else the contents of `file` if set, else "".
absl::StatusOr<std::string> PemOrFile(const std::string& pem,
                                      const std::string& file,
                                      absl::string_view what) {
  if (!pem.empty() || file.empty()) return pem;
  std::ifstream in(file, std::ios::binary);
  if (!in.is_open()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open ", what, " file ", file));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " file ", file));
  }
  if (contents.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " file ", file, " is empty"));
  }
  return contents.str();
}

// gRPC aborts the call (or the process, in debug builds) on metadata it
// cannot encode, so refuse it at Connect instead.
bool IsLegalKey(absl::string_view key) {
  if (key.empty() || absl::StartsWith(key, "grpc-")) return false;
  for (char c : key) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' ||
          c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

bool IsLegalAsciiValue(absl::string_view value) {
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

absl::StatusOr<Metadata> CallMetadata(const ChannelOptions& options) {
  Metadata metadata;
  if (!options.token.empty()) {
    // The message must not echo the token.
    if (!IsLegalAsciiValue(options.token) ||
        absl::StrContains(options.token, ' ')) {
      return absl::InvalidArgumentError(
          "the token has characters that cannot be sent (only printable "
          "ASCII without spaces)");
    }
    metadata.emplace_back("authorization", absl::StrCat("Bearer ", options.token));
  }
  for (const auto& [key, value] : options.metadata) {
    if (!IsLegalKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad metadata key \"", key,
          "\": use lowercase letters, digits, '-', '_' and '.', not grpc-"));
    }
    if (!absl::EndsWith(key, "-bin") && !IsLegalAsciiValue(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata \"", key,
          "\" has a value that is not printable ASCII (use a -bin key)"));
    }
    metadata.emplace_back(key, value);
  }
  return metadata;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TransportCredentials(
    const ChannelOptions& options) {
  absl::StatusOr<std::string> roots =
      PemOrFile(options.root_ca_pem, options.root_ca_file, "root CA");
  if (!roots.ok()) return roots.status();
  absl::StatusOr<std::string> cert =
      PemOrFile(options.client_cert_pem, options.client_cert_file,
                "client certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      PemOrFile(options.client_key_pem, options.client_key_file, "client key");
  if (!key.ok()) return key.status();
  if (cert->empty() != key->empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs both the client certificate and its key");
  }
  const bool tls = options.tls || !roots->empty() || !cert->empty();
  if (!tls) {
    if (!options.server_name_override.empty()) {
      return absl::InvalidArgumentError(
          "a TLS server name override needs TLS");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = *std::move(roots);
  ssl.pem_cert_chain = *std::move(cert);
  ssl.pem_private_key = *std::move(key);
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<Client> Client::Connect(absl::string_view address) {
  return Connect(address, ChannelOptions());
}

absl::StatusOr<Client> Client::Connect(absl::string_view address,
                                       const ChannelOptions& options) {
  if (address.empty()) return absl::InvalidArgumentError("empty address");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      TransportCredentials(options);
  if (!credentials.ok()) return credentials.status();
  absl::StatusOr<Metadata> metadata = CallMetadata(options);
  if (!metadata.ok()) return metadata.status();
  grpc::ChannelArguments args;
  if (!options.server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.server_name_override);
  }
  if (metadata->empty()) {
    return Client(grpc::CreateCustomChannel(std::string(address), *credentials,
                                            args));
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<MetadataInterceptorFactory>(
      std::make_shared<const Metadata>(*std::move(metadata))));
  return Client(grpc::experimental::CreateCustomChannelWithInterceptors(
      std::string(address), *credentials, args, std::move(interceptors)));
}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(v1::PyExec::NewStub(channel_)) {}

absl::StatusOr<BindResult> Client::Bind(absl::Duration idle_timeout,
                                        const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::BindRequest request;
  request.set_idle_timeout_seconds(
      static_cast<uint32_t>(absl::ToInt64Seconds(idle_timeout)));
  v1::BindResponse response;
  absl::Status status = FromGrpcStatus(stub_->Bind(&context, request, &response));
  if (!status.ok()) return status;
  return BindResult{response.session(),
                    absl::Seconds(response.idle_timeout_seconds())};
}

absl::Status Client::Unbind(absl::string_view session,
                            const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::UnbindRequest request;
  request.set_session(std::string(session));
  v1::UnbindResponse response;
  return FromGrpcStatus(stub_->Unbind(&context, request, &response));
}

absl::StatusOr<Result> Client::Eval(absl::string_view session,
                                    absl::string_view code,
                                    const ValueMap& locals,
                                    const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::EvalRequest request;
  request.set_session(std::string(session));
  request.set_code(std::string(code));
  request.set_result_as_ref(options.result_as_ref);
  CopyMap(locals, request.mutable_locals());
  v1::EvalResponse response;
  absl::Status status = FromGrpcStatus(stub_->Eval(&context, request, &response));
  if (!status.ok()) return status;
  return ToResult(response);
}

absl::StatusOr<Result> Client::Exec(absl::string_view session,
                                    absl::string_view code,
                                    const ValueMap& locals,
                                    const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::ExecRequest request;
  request.set_session(std::string(session));
  request.set_code(std::string(code));
  CopyMap(locals, request.mutable_locals());
  v1::ExecResponse response;
  absl::Status status = FromGrpcStatus(stub_->Exec(&context, request, &response));
  if (!status.ok()) return status;
  Result result;
  if (response.has_error()) {
    result.error = std::move(*response.mutable_error());
  } else {
    result.value = MakeNone();
  }
  result.stdout_text = std::move(*response.mutable_stdout());
  result.stderr_text = std::move(*response.mutable_stderr());
  return result;
}

absl::StatusOr<Result> Client::Call(absl::string_view session,
                                    absl::string_view module,
                                    absl::string_view function,
                                    const std::vector<v1::Value>& args,
                                    const ValueMap& kwargs,
                                    const CallOptions& options) const {
  return RunCall(MakeCallRequest(session, module, "", function, args, kwargs,
                                 options),
                 options);
}

absl::StatusOr<Result> Client::RunCall(const v1::CallRequest& request,
                                       const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::CallResponse response;
  absl::Status status = FromGrpcStatus(stub_->Call(&context, request, &response));
  if (!status.ok()) return status;
  return ToResult(response);
}

absl::StatusOr<Result> Client::CallMethod(absl::string_view session,
                                          const Ref& target,
                                          absl::string_view method,
                                          const std::vector<v1::Value>& args,
                                          const ValueMap& kwargs,
                                          const CallOptions& options) const {
  return RunCall(MakeCallRequest(session, "", target.id, method, args, kwargs,
                                 options),
                 options);
}

absl::StatusOr<Result> Client::GetAttr(absl::string_view session,
                                       const Ref& target, absl::string_view name,
                                       const CallOptions& options) const {
  v1::CallRequest request;
  request.set_session(std::string(session));
  request.set_target_ref(target.id);
  request.set_function(std::string(name));
  request.set_get_attribute(true);
  request.set_result_as_ref(options.result_as_ref);
  return RunCall(request, options);
}

absl::StatusOr<uint32_t> Client::ReleaseRefs(
    absl::string_view session, const std::vector<std::string>& ref_ids,
    const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::ReleaseRequest request;
  request.set_session(std::string(session));
  for (const std::string& id : ref_ids) request.add_ref_ids(id);
  v1::ReleaseResponse response;
  absl::Status status =
      FromGrpcStatus(stub_->Release(&context, request, &response));
  if (!status.ok()) return status;
  return response.released();
}

absl::StatusOr<bool> Client::Interrupt(absl::string_view session,
                                       const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::InterruptRequest request;
  request.set_session(std::string(session));
  v1::InterruptResponse response;
  absl::Status status =
      FromGrpcStatus(stub_->Interrupt(&context, request, &response));
  if (!status.ok()) return status;
  return response.interrupted();
}

std::unique_ptr<EventStream<v1::ExecEvent>> Client::ExecStream(
    absl::string_view session, absl::string_view code, const ValueMap& locals,
    const CallOptions& options) const {
  v1::ExecRequest request;
  request.set_session(std::string(session));
  request.set_code(std::string(code));
  CopyMap(locals, request.mutable_locals());
  auto stream = std::make_unique<EventStream<v1::ExecEvent>>();
  ApplyOptions(options, &stream->context_);
  stream->reader_ = stub_->ExecStream(&stream->context_, request);
  return stream;
}

std::unique_ptr<EventStream<v1::CallEvent>> Client::CallStream(
    absl::string_view session, absl::string_view module,
    absl::string_view function, const std::vector<v1::Value>& args,
    const ValueMap& kwargs, const CallOptions& options) const {
  const v1::CallRequest request =
      MakeCallRequest(session, module, "", function, args, kwargs, options);
  auto stream = std::make_unique<EventStream<v1::CallEvent>>();
  ApplyOptions(options, &stream->context_);
  stream->reader_ = stub_->CallStream(&stream->context_, request);
  return stream;
}

namespace {

// Drains a stream into handlers; the end event's error goes to the Result.
template <typename Event>
absl::StatusOr<Result> Drain(EventStream<Event>& stream,
                             const StreamHandlers& handlers) {
  Result result;
  Event event;
  while (stream.Next(&event)) {
    switch (event.event_case()) {
      case Event::kStdout:
        if (handlers.on_stdout) handlers.on_stdout(event.stdout());
        break;
      case Event::kStderr:
        if (handlers.on_stderr) handlers.on_stderr(event.stderr());
        break;
      case Event::kEnd:
        if (event.end().has_error()) result.error = event.end().error();
        break;
      default:
        if constexpr (std::is_same_v<Event, v1::CallEvent>) {
          if (event.has_value() && handlers.on_value) {
            handlers.on_value(event.value());
          }
        }
        break;
    }
  }
  absl::Status status = stream.Finish();
  if (!status.ok()) return status;
  return result;
}

}  // namespace

absl::StatusOr<Result> Client::RunExecStream(absl::string_view session,
                                             absl::string_view code,
                                             const StreamHandlers& handlers,
                                             const ValueMap& locals,
                                             const CallOptions& options) const {
  auto stream = ExecStream(session, code, locals, options);
  return Drain(*stream, handlers);
}

absl::StatusOr<Result> Client::RunCallStream(
    absl::string_view session, absl::string_view module,
    absl::string_view function, const StreamHandlers& handlers,
    const std::vector<v1::Value>& args, const ValueMap& kwargs,
    const CallOptions& options) const {
  auto stream = CallStream(session, module, function, args, kwargs, options);
  return Drain(*stream, handlers);
}

absl::StatusOr<v1::GetStatsResponse> Client::GetStats(
    const CallOptions& options) const {
  grpc::ClientContext context;
  ApplyOptions(options, &context);
  v1::GetStatsResponse response;
  absl::Status status = FromGrpcStatus(
      stub_->GetStats(&context, v1::GetStatsRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<Session> Session::Bind(const Client& client,
                                      absl::Duration idle_timeout,
                                      const CallOptions& options) {
  absl::StatusOr<BindResult> bound = client.Bind(idle_timeout, options);
  if (!bound.ok()) return bound.status();
  return Session(client, *std::move(bound));
}

Session::Session(Client client, BindResult bound)
    : client_(std::move(client)),
      token_(std::move(bound.session)),
      idle_timeout_(bound.idle_timeout) {}

Session::Session(Session&& other) noexcept
    : client_(other.client_),
      token_(std::exchange(other.token_, std::string())),
      idle_timeout_(other.idle_timeout_) {}

Session& Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    if (!token_.empty()) (void)Unbind(CallOptions{kDestructorUnbindTimeout});
    client_ = other.client_;
    token_ = std::exchange(other.token_, std::string());
    idle_timeout_ = other.idle_timeout_;
  }
  return *this;
}

Session::~Session() {
  if (!token_.empty()) (void)Unbind(CallOptions{kDestructorUnbindTimeout});
}

absl::StatusOr<Result> Session::Eval(absl::string_view code,
                                     const ValueMap& locals,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Eval(token_, code, locals, options);
}

absl::StatusOr<Result> Session::Exec(absl::string_view code,
                                     const ValueMap& locals,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Exec(token_, code, locals, options);
}

absl::StatusOr<Result> Session::Call(absl::string_view module,
                                     absl::string_view function,
                                     const std::vector<v1::Value>& args,
                                     const ValueMap& kwargs,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Call(token_, module, function, args, kwargs, options);
}

absl::Status Session::Unbind(const CallOptions& options) {
  if (token_.empty()) return absl::OkStatus();
  const std::string token = std::exchange(token_, std::string());
  return client_.Unbind(token, options);
}

std::string Session::Release() { return std::exchange(token_, std::string()); }

}  // namespace pyexec
