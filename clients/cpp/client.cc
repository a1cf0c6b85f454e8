#include "clients/cpp/client.h"

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/lease_manager.h"
#include "clients/cpp/router.h"
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
// How long Bind and Lease wait for the server to confirm a lease, at most.
constexpr absl::Duration kLeaseWait = absl::Seconds(10);
// The pause before a session call that failed UNAVAILABLE on the client's
// target is sent again (a draining replica has sent its GOAWAY, or a moved
// session's new place is being recorded).
constexpr absl::Duration kRetryPause = absl::Milliseconds(100);

constexpr char kCallIdHeader[] = "x-pyexec-call-id";
constexpr char kCallbackHeader[] = "x-pyexec-callback";
constexpr char kOwnerHeader[] = "x-pyexec-owner";

absl::Time DeadlineOf(const CallOptions& options) {
  if (options.timeout > absl::ZeroDuration() &&
      options.timeout != absl::InfiniteDuration()) {
    return absl::Now() + options.timeout;
  }
  return absl::InfiniteFuture();
}

void Prepare(grpc::ClientContext* context, absl::Time deadline,
             const std::string& call_id, const std::string& callback_id) {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  if (!call_id.empty()) context->AddMetadata(kCallIdHeader, call_id);
  if (!callback_id.empty()) context->AddMetadata(kCallbackHeader, callback_id);
}

// The status of a finished call. gRPC ends a call as a bare CANCELLED when
// the server shuts down under it (grpc/grpc#41785); unless this client
// cancelled the call itself, that means "retry elsewhere", UNAVAILABLE. The
// server's own CANCELLED (an Interrupt) always says why.
absl::Status Outcome(const grpc::Status& status, bool cancelled_here) {
  if (status.error_code() == grpc::StatusCode::CANCELLED && !cancelled_here &&
      (status.error_message() == "CANCELLED" || status.error_message().empty())) {
    return absl::UnavailableError(
        "the call was cut off (CANCELLED) by the server or the connection, not by this "
        "client: the server is shutting down or draining; retry");
  }
  return FromGrpcStatus(status);
}

// The owner address a forwarding replica named in its initial metadata.
// REQUIRES: the call has finished (its initial metadata was received).
void LearnOwner(internal::Router& router, absl::string_view session,
                const grpc::ClientContext& context) {
  if (!router.routing() || session.empty()) return;
  const auto& metadata = context.GetServerInitialMetadata();
  auto it = metadata.find(kOwnerHeader);
  if (it != metadata.end()) {
    router.Learned(session, absl::string_view(it->second.data(), it->second.size()));
  }
}

std::string RandomHex() {
  std::random_device random;
  const uint64_t n = (static_cast<uint64_t>(random()) << 32) ^ random();
  return absl::StrCat(absl::Hex(n, absl::kZeroPad16));
}

std::string Demangle(const char* name) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (demangled == nullptr) return name;
  std::string result(demangled);
  std::free(demangled);
  return result;
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

v1::RunRequest EvalRunRequest(absl::string_view session, absl::string_view code,
                              const ValueMap& locals, const CallOptions& options) {
  v1::RunRequest run;
  v1::EvalRequest* request = run.mutable_eval();
  request->set_session(std::string(session));
  request->set_code(std::string(code));
  request->set_result_as_ref(options.result_as_ref);
  CopyMap(locals, request->mutable_locals());
  return run;
}

v1::RunRequest ExecRunRequest(absl::string_view session, absl::string_view code,
                              const ValueMap& locals) {
  v1::RunRequest run;
  v1::ExecRequest* request = run.mutable_exec();
  request->set_session(std::string(session));
  request->set_code(std::string(code));
  CopyMap(locals, request->mutable_locals());
  return run;
}

v1::RunRequest CallRunRequest(v1::CallRequest call) {
  v1::RunRequest run;
  *run.mutable_call() = std::move(call);
  return run;
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

Result ExecResult(v1::ExecResponse& response) {
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

namespace internal {

// Lets another thread cancel a call that runs on this one (PendingCall).
class CallControl {
 public:
  // The call is about to start with `context`; false if it was cancelled.
  bool Begin(grpc::ClientContext* context) {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return false;
    context_ = context;
    return true;
  }
  // The call has ended; true if it was cancelled from here.
  bool End() {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    return cancelled_;
  }
  // Cancels the RPC now, or the next one that Begins.
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    // Sync calls run no reactions inside TryCancel, so the lock is safe.
    if (context_ != nullptr) context_->TryCancel();
  }
  // An Interrupt naming the call was sent: its failure is not retried.
  void Interrupting() {
    absl::MutexLock lock(&mu_);
    interrupting_ = true;
  }
  bool interrupting() const {
    absl::MutexLock lock(&mu_);
    return interrupting_;
  }

 private:
  mutable absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool interrupting_ ABSL_GUARDED_BY(mu_) = false;
};

// What the copies of one Client share.
struct ClientState {
  ClientState(std::shared_ptr<grpc::Channel> channel, RouterOptions options)
      : router(std::move(channel), std::move(options)), leases(&router) {}

  std::string NewCallId() {
    return absl::StrCat(call_prefix, "-", next_call.fetch_add(1, std::memory_order_relaxed));
  }

  std::shared_ptr<const CallbackFunction> Function(const std::string& name) {
    absl::MutexLock lock(&mu);
    auto it = functions.find(name);
    return it == functions.end() ? nullptr : it->second;
  }

  // Destroyed in reverse: the leases (their streams use the router's
  // stubs) before the router.
  Router router;
  LeaseManager leases;
  const std::string call_prefix = RandomHex();
  std::atomic<uint64_t> next_call{1};
  std::atomic<bool> has_functions{false};
  absl::Mutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<const CallbackFunction>> functions
      ABSL_GUARDED_BY(mu);
};

// The callback a thread is running, so that calls it makes through the
// Client that registered the function name it (x-pyexec-callback).
struct CurrentCallback {
  const ClientState* state = nullptr;
  const std::string* id = nullptr;
};
thread_local CurrentCallback current_callback;

class CurrentCallbackScope {
 public:
  CurrentCallbackScope(const ClientState* state, const std::string* id)
      : saved_(current_callback) {
    current_callback = {state, id};
  }
  ~CurrentCallbackScope() { current_callback = saved_; }

 private:
  CurrentCallback saved_;
};

// One Run stream, shared with the threads that run its callbacks.
struct RunShared {
  using Stream = grpc::ClientReaderWriterInterface<v1::RunRequest, v1::RunEvent>;

  // Sends one message unless the stream is closed for writing.
  bool Send(const v1::RunRequest& request) {
    absl::MutexLock lock(&write_mu);
    return stream != nullptr && stream->Write(request);
  }

  // No more callbacks are wanted: their functions see cancelled().
  void End() {
    absl::MutexLock lock(&mu);
    ended = true;
  }

  // Closes the stream for writing (WritesDone when `half_close`); answers
  // that come later are dropped.
  void Close(bool half_close) {
    absl::MutexLock lock(&write_mu);
    if (stream != nullptr && half_close) stream->WritesDone();
    stream = nullptr;
  }

  // Runs the function `request` names on this thread and sends its answer.
  static void Serve(std::shared_ptr<RunShared> run, std::shared_ptr<ClientState> state,
                    std::string session, const FunctionMap* call_functions,
                    v1::CallbackRequest request) {
    v1::RunRequest answer;
    v1::CallbackResult* result = answer.mutable_callback_result();
    result->set_id(request.id());
    std::shared_ptr<const CallbackFunction> function;
    if (call_functions != nullptr) {
      auto it = call_functions->find(request.name());
      // The call's own map outlives this thread (the call joins it).
      if (it != call_functions->end()) {
        function = std::shared_ptr<const CallbackFunction>(std::shared_ptr<void>(), &it->second);
      }
    }
    if (function == nullptr) function = state->Function(request.name());
    if (function == nullptr) {
      result->mutable_error()->set_type("LookupError");
      result->mutable_error()->set_message(
          absl::StrCat("no function is registered as '", request.name(), "' in this client"));
    } else {
      const Client client(state, request.id());
      CallbackContext context(request.id(), request.name(), session, &client, run);
      std::vector<v1::Value> args(std::make_move_iterator(request.mutable_args()->begin()),
                                  std::make_move_iterator(request.mutable_args()->end()));
      ValueMap kwargs;
      for (auto& [name, value] : *request.mutable_kwargs()) kwargs[name] = std::move(value);
      CurrentCallbackScope scope(state.get(), &context.id());
      try {
        absl::StatusOr<v1::Value> value = (*function)(context, args, kwargs);
        if (value.ok()) {
          *result->mutable_value() = *std::move(value);
        } else {
          result->mutable_error()->set_type(absl::StatusCodeToString(value.status().code()));
          result->mutable_error()->set_message(std::string(value.status().message()));
        }
      } catch (const std::exception& e) {
        result->mutable_error()->set_type(Demangle(typeid(e).name()));
        result->mutable_error()->set_message(e.what());
      } catch (...) {
        result->mutable_error()->set_type("unknown C++ exception");
        result->mutable_error()->set_message("the function threw something that is not a std::exception");
      }
    }
    run->Send(answer);
  }

  absl::Mutex write_mu;
  Stream* stream ABSL_GUARDED_BY(write_mu) = nullptr;
  absl::Mutex mu;
  bool ended ABSL_GUARDED_BY(mu) = false;
};

// A PendingCall's state, shared with its thread.
struct PendingShared {
  PendingShared(Client c, std::string s) : client(std::move(c)), session(std::move(s)) {}

  const Client client;
  const std::string session;
  std::string call_id;  // set before the thread starts
  CallControl control;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<Result> result ABSL_GUARDED_BY(mu) = absl::UnknownError("not done");
};

namespace {

// Sends a call, and once more if it fails UNAVAILABLE before the server
// took it: only session calls, only if the client did not cancel or
// interrupt it, only within its deadline. The second try goes to the
// client's target when the first went to the session's owner. `attempt`
// makes one try on `route` with a prepared context, and sets *started once
// the server has shown that it runs the call (a Run's first event).
absl::Status WithRetry(
    ClientState& state, absl::string_view session, absl::Time deadline,
    const std::string& call_id, const std::string& callback_id, CallControl* control,
    absl::FunctionRef<grpc::Status(const Route&, grpc::ClientContext*, bool* started)> attempt) {
  bool fallback = false;
  for (int tries = 1;; ++tries) {
    const Route route = state.router.For(session, fallback);
    grpc::ClientContext context;
    Prepare(&context, deadline, call_id, callback_id);
    if (control != nullptr && !control->Begin(&context)) {
      return absl::CancelledError("the call was cancelled by the client");
    }
    bool started = false;
    const grpc::Status status = attempt(route, &context, &started);
    const bool cancelled_here = control != nullptr && control->End();
    absl::Status outcome = Outcome(status, cancelled_here);
    LearnOwner(state.router, session, context);
    const bool retry = tries == 1 && !session.empty() && !started && !cancelled_here &&
                       outcome.code() == absl::StatusCode::kUnavailable &&
                       (control == nullptr || !control->interrupting()) && absl::Now() < deadline;
    if (!retry) return outcome;
    if (!route.owner.empty()) {
      state.router.OwnerFailed(route, session);
      fallback = true;
    } else {
      absl::SleepFor(std::min(kRetryPause, deadline - absl::Now()));
    }
  }
}

template <typename Request, typename Response>
using UnaryMethod = grpc::Status (v1::PyExec::StubInterface::*)(grpc::ClientContext*,
                                                               const Request&, Response*);

template <typename Request, typename Response>
absl::Status Unary(ClientState& state, UnaryMethod<Request, Response> method,
                   absl::string_view session, const Request& request, Response* response,
                   absl::Time deadline, const std::string& call_id,
                   const std::string& callback_id, CallControl* control = nullptr) {
  return WithRetry(state, session, deadline, call_id, callback_id, control,
                   [&](const Route& route, grpc::ClientContext* context, bool*) {
                     response->Clear();
                     return (route.stub->*method)(context, request, response);
                   });
}

// One try of a Run: the request, then a thread per callback the server
// asks for, until the response; then the half-close and the status.
grpc::Status RunAttempt(const std::shared_ptr<ClientState>& state, const Route& route,
                        grpc::ClientContext* context, const v1::RunRequest& request,
                        const std::string& session, const FunctionMap* call_functions,
                        v1::RunEvent* response, bool* started) {
  std::unique_ptr<RunShared::Stream> stream = route.stub->Run(context);
  auto run = std::make_shared<RunShared>();
  {
    absl::MutexLock lock(&run->write_mu);
    run->stream = stream.get();
  }
  std::vector<std::thread> callbacks;
  bool answered = false;
  if (run->Send(request)) {
    v1::RunEvent event;
    while (stream->Read(&event)) {
      *started = true;
      if (event.has_callback()) {
        callbacks.emplace_back(RunShared::Serve, run, state, session, call_functions,
                               std::move(*event.mutable_callback()));
        continue;
      }
      *response = std::move(event);
      answered = true;
      break;
    }
  }
  run->End();
  run->Close(/*half_close=*/answered);
  for (std::thread& callback : callbacks) callback.join();
  grpc::Status status = stream->Finish();
  if (status.ok() && !answered) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "the Run stream ended without a response");
  }
  return status;
}

}  // namespace
}  // namespace internal

using internal::ClientState;
using internal::Route;

// ---------------------------------------------------------------- Client

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
  // Owner channels are made the same way as the target's: the same
  // credentials, the same token and metadata.
  auto make_channel = [credentials = *credentials, args,
                       metadata = std::make_shared<const Metadata>(*std::move(metadata))](
                          const std::string& target) -> std::shared_ptr<grpc::Channel> {
    if (metadata->empty()) return grpc::CreateCustomChannel(target, credentials, args);
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(std::make_unique<MetadataInterceptorFactory>(metadata));
    return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                   std::move(interceptors));
  };
  internal::RouterOptions routing;
  if (options.route_to_owner) {
    routing.make_owner_channel = make_channel;
    routing.connect_timeout = options.owner_connect_timeout;
  }
  return Client(std::make_shared<ClientState>(make_channel(std::string(address)),
                                              std::move(routing)),
                "");
}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : state_(std::make_shared<ClientState>(std::move(channel), internal::RouterOptions())) {}

v1::PyExec::StubInterface& Client::stub() const { return state_->router.target(); }

std::string Client::OwnerOf(absl::string_view session) const {
  return state_->router.OwnerOf(session);
}

std::string Client::CallbackId() const {
  if (!callback_id_.empty()) return callback_id_;
  const internal::CurrentCallback& current = internal::current_callback;
  if (current.state == state_.get() && current.id != nullptr) return *current.id;
  return "";
}

absl::StatusOr<BindResult> Client::Bind(absl::Duration idle_timeout,
                                        const CallOptions& options) const {
  BindOptions bind;
  bind.idle_timeout = idle_timeout;
  return Bind(bind, options);
}

absl::StatusOr<BindResult> Client::Bind(const BindOptions& bind,
                                        const CallOptions& options) const {
  const absl::Time deadline = DeadlineOf(options);
  v1::BindRequest request;
  request.set_idle_timeout_seconds(
      static_cast<uint32_t>(absl::ToInt64Seconds(bind.idle_timeout)));
  request.set_restore(bind.restore);
  v1::BindResponse response;
  // A Bind is never sent twice: a second try could bind a second session.
  absl::Status status = internal::Unary(*state_, &v1::PyExec::StubInterface::Bind, "",
                                        request, &response, deadline, "", "");
  if (!status.ok()) return status;
  BindResult result;
  result.session = response.session();
  result.idle_timeout = absl::Seconds(response.idle_timeout_seconds());
  result.owner = response.owner();
  result.restore_lost.assign(response.restore_lost().begin(), response.restore_lost().end());
  if (response.has_restore_error()) result.restore_error = response.restore_error();
  state_->router.Learned(result.session, result.owner);
  if (bind.lease) {
    result.leased =
        state_->leases.Lease(result.session, std::min(deadline, absl::Now() + kLeaseWait)).ok();
  }
  return result;
}

absl::Status Client::Unbind(absl::string_view session, const CallOptions& options) const {
  state_->leases.End(std::string(session));
  v1::UnbindRequest request;
  request.set_session(std::string(session));
  v1::UnbindResponse response;
  absl::Status status =
      internal::Unary(*state_, &v1::PyExec::StubInterface::Unbind, session, request, &response,
                      DeadlineOf(options), state_->NewCallId(), CallbackId());
  state_->router.Forget(session);
  return status;
}

absl::Status Client::Lease(absl::string_view session, const CallOptions& options) const {
  const absl::Time deadline = options.timeout > absl::ZeroDuration() &&
                                      options.timeout != absl::InfiniteDuration()
                                  ? absl::Now() + options.timeout
                                  : absl::Now() + kLeaseWait;
  return state_->leases.Lease(std::string(session), deadline);
}

void Client::EndLease(absl::string_view session) const {
  state_->leases.End(std::string(session));
}

std::optional<LeaseState> Client::GetLease(absl::string_view session) const {
  std::optional<internal::LeaseInfo> info = state_->leases.Info(std::string(session));
  if (!info.has_value()) return std::nullopt;
  return LeaseState{info->held, info->attaches, absl::Seconds(info->grace_seconds)};
}

void Client::RegisterFunction(std::string name, CallbackFunction fn) const {
  absl::MutexLock lock(&state_->mu);
  state_->functions[std::move(name)] = std::make_shared<const CallbackFunction>(std::move(fn));
  state_->has_functions.store(true);
}

bool Client::UnregisterFunction(absl::string_view name) const {
  absl::MutexLock lock(&state_->mu);
  const bool erased = state_->functions.erase(name) > 0;
  state_->has_functions.store(!state_->functions.empty());
  return erased;
}

absl::StatusOr<Result> Client::Perform(absl::string_view session,
                                       const v1::RunRequest& request,
                                       const CallOptions& options,
                                       internal::CallControl* control) const {
  ClientState& state = *state_;
  const absl::Time deadline = DeadlineOf(options);
  const std::string call_id = options.call_id.empty() ? state.NewCallId() : options.call_id;
  const std::string callback_id = CallbackId();
  if (state.has_functions.load() || options.functions.has_value()) {
    const FunctionMap* call_functions =
        options.functions.has_value() ? &*options.functions : nullptr;
    v1::RunEvent response;
    const std::string session_copy(session);
    absl::Status status = internal::WithRetry(
        state, session, deadline, call_id, callback_id, control,
        [&](const Route& route, grpc::ClientContext* context, bool* started) {
          response.Clear();
          return internal::RunAttempt(state_, route, context, request, session_copy,
                                      call_functions, &response, started);
        });
    if (!status.ok()) return status;
    switch (response.event_case()) {
      case v1::RunEvent::kEval:
        return ToResult(*response.mutable_eval());
      case v1::RunEvent::kExec:
        return ExecResult(*response.mutable_exec());
      case v1::RunEvent::kCall:
        return ToResult(*response.mutable_call());
      default:
        return absl::InternalError("the Run stream ended with an unexpected event");
    }
  }
  absl::Status status;
  switch (request.kind_case()) {
    case v1::RunRequest::kEval: {
      v1::EvalResponse response;
      status = internal::Unary(state, &v1::PyExec::StubInterface::Eval, session, request.eval(),
                               &response, deadline, call_id, callback_id, control);
      if (!status.ok()) return status;
      return ToResult(response);
    }
    case v1::RunRequest::kExec: {
      v1::ExecResponse response;
      status = internal::Unary(state, &v1::PyExec::StubInterface::Exec, session, request.exec(),
                               &response, deadline, call_id, callback_id, control);
      if (!status.ok()) return status;
      return ExecResult(response);
    }
    case v1::RunRequest::kCall: {
      v1::CallResponse response;
      status = internal::Unary(state, &v1::PyExec::StubInterface::Call, session, request.call(),
                               &response, deadline, call_id, callback_id, control);
      if (!status.ok()) return status;
      return ToResult(response);
    }
    default:
      return absl::InternalError("Perform: no call in the request");
  }
}

absl::StatusOr<Result> Client::Eval(absl::string_view session, absl::string_view code,
                                    const ValueMap& locals, const CallOptions& options) const {
  return Perform(session, EvalRunRequest(session, code, locals, options), options, nullptr);
}

absl::StatusOr<Result> Client::Exec(absl::string_view session, absl::string_view code,
                                    const ValueMap& locals, const CallOptions& options) const {
  return Perform(session, ExecRunRequest(session, code, locals), options, nullptr);
}

absl::StatusOr<Result> Client::Call(absl::string_view session, absl::string_view module,
                                    absl::string_view function,
                                    const std::vector<v1::Value>& args,
                                    const ValueMap& kwargs, const CallOptions& options) const {
  return Perform(session,
                 CallRunRequest(MakeCallRequest(session, module, "", function, args, kwargs,
                                                options)),
                 options, nullptr);
}

absl::StatusOr<Result> Client::CallMethod(absl::string_view session, const Ref& target,
                                          absl::string_view method,
                                          const std::vector<v1::Value>& args,
                                          const ValueMap& kwargs,
                                          const CallOptions& options) const {
  return Perform(session,
                 CallRunRequest(MakeCallRequest(session, "", target.id, method, args, kwargs,
                                                options)),
                 options, nullptr);
}

absl::StatusOr<Result> Client::GetAttr(absl::string_view session, const Ref& target,
                                       absl::string_view name,
                                       const CallOptions& options) const {
  v1::CallRequest request;
  request.set_session(std::string(session));
  request.set_target_ref(target.id);
  request.set_function(std::string(name));
  request.set_get_attribute(true);
  request.set_result_as_ref(options.result_as_ref);
  return Perform(session, CallRunRequest(std::move(request)), options, nullptr);
}

PendingCall Client::Start(std::string session, v1::RunRequest request,
                          CallOptions options) const {
  if (options.call_id.empty()) options.call_id = state_->NewCallId();
  // The thread makes the call on behalf of this one: it names the same
  // callback, if any.
  auto shared = std::make_shared<internal::PendingShared>(Client(state_, CallbackId()),
                                                          std::move(session));
  shared->call_id = options.call_id;
  std::thread thread([shared, request = std::move(request), options = std::move(options)] {
    absl::StatusOr<Result> result =
        shared->client.Perform(shared->session, request, options, &shared->control);
    absl::MutexLock lock(&shared->mu);
    shared->result = std::move(result);
    shared->done = true;
  });
  return PendingCall(std::move(shared), std::move(thread));
}

PendingCall Client::Failed(absl::Status status) const {
  auto shared = std::make_shared<internal::PendingShared>(*this, "");
  absl::MutexLock lock(&shared->mu);
  shared->result = std::move(status);
  shared->done = true;
  return PendingCall(shared, std::thread());
}

PendingCall Client::StartEval(absl::string_view session, absl::string_view code,
                              const ValueMap& locals, const CallOptions& options) const {
  return Start(std::string(session), EvalRunRequest(session, code, locals, options), options);
}

PendingCall Client::StartExec(absl::string_view session, absl::string_view code,
                              const ValueMap& locals, const CallOptions& options) const {
  return Start(std::string(session), ExecRunRequest(session, code, locals), options);
}

PendingCall Client::StartCall(absl::string_view session, absl::string_view module,
                              absl::string_view function, const std::vector<v1::Value>& args,
                              const ValueMap& kwargs, const CallOptions& options) const {
  return Start(std::string(session),
               CallRunRequest(MakeCallRequest(session, module, "", function, args, kwargs,
                                              options)),
               options);
}

absl::StatusOr<uint32_t> Client::ReleaseRefs(absl::string_view session,
                                             const std::vector<std::string>& ref_ids,
                                             const CallOptions& options) const {
  v1::ReleaseRequest request;
  request.set_session(std::string(session));
  for (const std::string& id : ref_ids) request.add_ref_ids(id);
  v1::ReleaseResponse response;
  absl::Status status =
      internal::Unary(*state_, &v1::PyExec::StubInterface::Release, session, request, &response,
                      DeadlineOf(options), state_->NewCallId(), CallbackId());
  if (!status.ok()) return status;
  return response.released();
}

absl::StatusOr<bool> Client::Interrupt(absl::string_view session,
                                       const CallOptions& options) const {
  return InterruptCall(session, "", options);
}

absl::StatusOr<bool> Client::InterruptCall(absl::string_view session,
                                           absl::string_view call_id,
                                           const CallOptions& options) const {
  v1::InterruptRequest request;
  request.set_session(std::string(session));
  request.set_call_id(std::string(call_id));
  v1::InterruptResponse response;
  absl::Status status =
      internal::Unary(*state_, &v1::PyExec::StubInterface::Interrupt, session, request,
                      &response, DeadlineOf(options), state_->NewCallId(), CallbackId());
  if (!status.ok()) return status;
  return response.interrupted();
}

absl::StatusOr<v1::SnapshotResponse> Client::Snapshot(absl::string_view session,
                                                      const CallOptions& options) const {
  v1::SnapshotRequest request;
  request.set_session(std::string(session));
  v1::SnapshotResponse response;
  absl::Status status =
      internal::Unary(*state_, &v1::PyExec::StubInterface::Snapshot, session, request,
                      &response, DeadlineOf(options), state_->NewCallId(), CallbackId());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::GetStatsResponse> Client::GetStats(const CallOptions& options) const {
  v1::GetStatsResponse response;
  absl::Status status =
      internal::Unary(*state_, &v1::PyExec::StubInterface::GetStats, "", v1::GetStatsRequest(),
                      &response, DeadlineOf(options), "", "");
  if (!status.ok()) return status;
  return response;
}

// ----------------------------------------------------------- EventStream

template <typename Event>
EventStream<Event>::~EventStream() {
  reader_.reset();  // before its context
}

template <typename Event>
bool EventStream<Event>::Open(bool fallback) {
  reader_.reset();
  route_ = state_->router.For(session_, fallback);
  auto context = std::make_unique<grpc::ClientContext>();
  Prepare(context.get(), deadline_, call_id_, callback_id_);
  grpc::ClientContext* raw = context.get();
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) {
      status_ = absl::CancelledError("the stream was cancelled by the client");
      finished_ = true;
      return false;
    }
    context_ = std::move(context);
  }
  reader_ = open_(route_.stub, raw);
  return true;
}

template <typename Event>
bool EventStream<Event>::Next(Event* event) {
  if (finished_) return false;
  while (true) {
    if (reader_->Read(event)) {
      got_event_ = true;
      return true;
    }
    const grpc::Status status = reader_->Finish();
    bool cancelled_here;
    grpc::ClientContext* context;
    {
      absl::MutexLock lock(&mu_);
      cancelled_here = cancelled_;
      context = context_.get();
    }
    status_ = Outcome(status, cancelled_here);
    LearnOwner(state_->router, session_, *context);
    const bool retry = !got_event_ && ++attempts_ == 1 && !session_.empty() &&
                       !cancelled_here && status_.code() == absl::StatusCode::kUnavailable &&
                       absl::Now() < deadline_;
    if (!retry) {
      finished_ = true;
      return false;
    }
    bool fallback = false;
    if (!route_.owner.empty()) {
      state_->router.OwnerFailed(route_, session_);
      fallback = true;
    } else {
      absl::SleepFor(std::min(kRetryPause, deadline_ - absl::Now()));
    }
    if (!Open(fallback)) return false;
  }
}

template <typename Event>
absl::Status EventStream<Event>::Finish() {
  Event event;
  while (Next(&event)) {
  }
  return status_;
}

template <typename Event>
void EventStream<Event>::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

template class EventStream<v1::ExecEvent>;
template class EventStream<v1::CallEvent>;

std::unique_ptr<EventStream<v1::ExecEvent>> Client::ExecStream(
    absl::string_view session, absl::string_view code, const ValueMap& locals,
    const CallOptions& options) const {
  v1::ExecRequest request;
  request.set_session(std::string(session));
  request.set_code(std::string(code));
  CopyMap(locals, request.mutable_locals());
  auto stream = std::make_unique<EventStream<v1::ExecEvent>>();
  stream->state_ = state_;
  stream->session_ = std::string(session);
  stream->deadline_ = DeadlineOf(options);
  stream->call_id_ = options.call_id.empty() ? state_->NewCallId() : options.call_id;
  stream->callback_id_ = CallbackId();
  stream->open_ = [request = std::move(request)](v1::PyExec::StubInterface* stub,
                                                 grpc::ClientContext* context) {
    return stub->ExecStream(context, request);
  };
  stream->Open(/*fallback=*/false);
  return stream;
}

std::unique_ptr<EventStream<v1::CallEvent>> Client::CallStream(
    absl::string_view session, absl::string_view module, absl::string_view function,
    const std::vector<v1::Value>& args, const ValueMap& kwargs,
    const CallOptions& options) const {
  v1::CallRequest request =
      MakeCallRequest(session, module, "", function, args, kwargs, options);
  auto stream = std::make_unique<EventStream<v1::CallEvent>>();
  stream->state_ = state_;
  stream->session_ = std::string(session);
  stream->deadline_ = DeadlineOf(options);
  stream->call_id_ = options.call_id.empty() ? state_->NewCallId() : options.call_id;
  stream->callback_id_ = CallbackId();
  stream->open_ = [request = std::move(request)](v1::PyExec::StubInterface* stub,
                                                 grpc::ClientContext* context) {
    return stub->CallStream(context, request);
  };
  stream->Open(/*fallback=*/false);
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

// ------------------------------------------------------- CallbackContext

bool CallbackContext::cancelled() const {
  absl::MutexLock lock(&run_->mu);
  return run_->ended;
}

bool CallbackContext::WaitForCancellation(absl::Duration timeout) const {
  absl::MutexLock lock(&run_->mu);
  auto ended = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return run_->ended; };
  return run_->mu.AwaitWithTimeout(absl::Condition(&ended), timeout);
}

// ----------------------------------------------------------- PendingCall

PendingCall& PendingCall::operator=(PendingCall&& other) noexcept {
  if (this != &other) {
    if (thread_.joinable()) {
      if (!Done()) Cancel();
      thread_.join();
    }
    shared_ = std::move(other.shared_);
    thread_ = std::move(other.thread_);
  }
  return *this;
}

PendingCall::~PendingCall() {
  if (thread_.joinable()) {
    if (!Done()) Cancel();
    thread_.join();
  }
}

const std::string& PendingCall::call_id() const { return shared_->call_id; }

absl::StatusOr<bool> PendingCall::Interrupt(const CallOptions& options) const {
  if (shared_->session.empty()) {
    return absl::FailedPreconditionError(
        "a stateless call cannot be interrupted by name; Cancel() it");
  }
  shared_->control.Interrupting();
  return shared_->client.InterruptCall(shared_->session, shared_->call_id, options);
}

void PendingCall::Cancel() const { shared_->control.Cancel(); }

bool PendingCall::Done() const {
  absl::MutexLock lock(&shared_->mu);
  return shared_->done;
}

bool PendingCall::WaitFor(absl::Duration timeout) const {
  absl::MutexLock lock(&shared_->mu);
  auto done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return shared_->done; };
  return shared_->mu.AwaitWithTimeout(absl::Condition(&done), timeout);
}

absl::StatusOr<Result> PendingCall::Wait() {
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&shared_->mu);
  return shared_->result;
}

// --------------------------------------------------------------- Session

absl::StatusOr<Session> Session::Bind(const Client& client, absl::Duration idle_timeout,
                                      const CallOptions& options) {
  BindOptions bind;
  bind.idle_timeout = idle_timeout;
  return Bind(client, bind, options);
}

absl::StatusOr<Session> Session::Bind(const Client& client, const BindOptions& bind,
                                      const CallOptions& options) {
  absl::StatusOr<BindResult> bound = client.Bind(bind, options);
  if (!bound.ok()) return bound.status();
  return Session(client, *std::move(bound));
}

Session::Session(Client client, BindResult bound)
    : client_(std::move(client)), token_(bound.session), bound_(std::move(bound)) {}

Session::Session(Session&& other) noexcept
    : client_(other.client_),
      token_(std::exchange(other.token_, std::string())),
      bound_(std::move(other.bound_)) {}

Session& Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    if (!token_.empty()) (void)Unbind(CallOptions{kDestructorUnbindTimeout});
    client_ = other.client_;
    token_ = std::exchange(other.token_, std::string());
    bound_ = std::move(other.bound_);
  }
  return *this;
}

Session::~Session() {
  if (!token_.empty()) (void)Unbind(CallOptions{kDestructorUnbindTimeout});
}

absl::StatusOr<Result> Session::Eval(absl::string_view code, const ValueMap& locals,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Eval(token_, code, locals, options);
}

absl::StatusOr<Result> Session::Exec(absl::string_view code, const ValueMap& locals,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Exec(token_, code, locals, options);
}

absl::StatusOr<Result> Session::Call(absl::string_view module, absl::string_view function,
                                     const std::vector<v1::Value>& args,
                                     const ValueMap& kwargs,
                                     const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Call(token_, module, function, args, kwargs, options);
}

PendingCall Session::StartEval(absl::string_view code, const ValueMap& locals,
                               const CallOptions& options) const {
  if (token_.empty()) return client_.Failed(ReleasedError());
  return client_.StartEval(token_, code, locals, options);
}

PendingCall Session::StartExec(absl::string_view code, const ValueMap& locals,
                               const CallOptions& options) const {
  if (token_.empty()) return client_.Failed(ReleasedError());
  return client_.StartExec(token_, code, locals, options);
}

PendingCall Session::StartCall(absl::string_view module, absl::string_view function,
                               const std::vector<v1::Value>& args, const ValueMap& kwargs,
                               const CallOptions& options) const {
  if (token_.empty()) return client_.Failed(ReleasedError());
  return client_.StartCall(token_, module, function, args, kwargs, options);
}

absl::StatusOr<bool> Session::Interrupt(const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Interrupt(token_, options);
}

absl::StatusOr<v1::SnapshotResponse> Session::Snapshot(const CallOptions& options) const {
  if (token_.empty()) return ReleasedError();
  return client_.Snapshot(token_, options);
}

absl::Status Session::Unbind(const CallOptions& options) {
  if (token_.empty()) return absl::OkStatus();
  const std::string token = std::exchange(token_, std::string());
  return client_.Unbind(token, options);
}

std::string Session::Release() { return std::exchange(token_, std::string()); }

}  // namespace pyexec
