// A small C++ client for the pyexec.v1.PyExec service.
//
//   absl::StatusOr<pyexec::Client> client = pyexec::Client::Connect("127.0.0.1:50051");
//   absl::StatusOr<pyexec::Session> session = pyexec::Session::Bind(*client);
//   session->Exec("x = 41");
//   absl::StatusOr<pyexec::Result> r = session->Eval("x + 1");
//   // r->value holds 42; the session is unbound when `session` goes away.
//
// Over TLS, with a bearer token:
//
//   pyexec::ChannelOptions channel;
//   channel.root_ca_file = "ca.pem";        // implies TLS
//   channel.token = "secret";               // `authorization: Bearer secret`
//   auto client = pyexec::Client::Connect("pyexec.example:50051", channel);
//
// A Python exception is a Result with `error` set; a non-OK absl::Status
// means a service-level failure (NOT_FOUND, ABORTED, DEADLINE_EXCEEDED...).

#ifndef PYEXEC_CLIENTS_CPP_CLIENT_H_
#define PYEXEC_CLIENTS_CPP_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "clients/cpp/status_util.h"
#include "clients/cpp/value.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {

// Names bound for one call (Eval/Exec `locals`, Call `kwargs`).
using ValueMap = std::map<std::string, v1::Value>;

// Per-call options.
struct CallOptions {
  // Sent as the gRPC deadline. Zero or infinite sends no deadline, and the
  // server applies its default (30 s unless configured otherwise).
  absl::Duration timeout = absl::ZeroDuration();
  // Eval/Call on a bound session: return the result as a Ref even if it has
  // a Value kind (a big list stays in the server). INVALID_ARGUMENT on a
  // stateless call.
  bool result_as_ref = false;
};

// A server stream (ExecStream, CallStream) read one event at a time:
//
//   auto stream = client.ExecStream(session, "for i in range(3): print(i)");
//   v1::ExecEvent event;
//   while (stream->Next(&event)) { ... event.stdout() ... }
//   absl::Status status = stream->Finish();
//
// Output chunks come as the code writes them; the last event of a stream
// that ends OK is `end` (with the Python error, if any). Not reading applies
// backpressure: the server pauses the Python code. Next and Finish are for
// one thread; Cancel may be called from any thread, and interrupts the
// Python code (the stream then ends CANCELLED).
template <typename Event>
class EventStream {
 public:
  EventStream() = default;
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  // The next event; false once the stream has ended (then call Finish).
  bool Next(Event* event) { return reader_->Read(event); }
  // How the stream ended: OK, or the service-level status (NOT_FOUND,
  // ABORTED, DEADLINE_EXCEEDED, CANCELLED...).
  absl::Status Finish();
  // Cancels the call; the server interrupts the Python code.
  void Cancel() { context_.TryCancel(); }

 private:
  friend class Client;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderInterface<Event>> reader_;
};

// Callbacks for Client::RunExecStream / RunCallStream, called on the
// caller's thread in stream order. Any may be empty.
struct StreamHandlers {
  std::function<void(absl::string_view chunk)> on_stdout;
  std::function<void(absl::string_view chunk)> on_stderr;
  // CallStream: each item of an iterator result, or the single result.
  std::function<void(const v1::Value& value)> on_value;
};

// The outcome of an Eval, Exec or Call that reached Python.
struct Result {
  // The returned value; None for Exec, unset (no kind) when `error` is set.
  v1::Value value;
  // Set when the Python code raised.
  std::optional<v1::PythonError> error;
  // Output the call printed, as captured by the server (bounded there).
  std::string stdout_text;
  std::string stderr_text;

  // True when the Python code did not raise.
  bool ok() const { return !error.has_value(); }
};

// What Bind granted.
struct BindResult {
  // Opaque session token for Eval/Exec/Call/Unbind.
  std::string session;
  // The idle timeout the server granted.
  absl::Duration idle_timeout;
};

// How Client::Connect reaches the server: transport security, and the
// credentials and metadata sent with every call. The PEM fields win over the
// matching *_file fields; files are read once, at Connect.
struct ChannelOptions {
  // Use TLS. Any certificate field below turns it on too.
  bool tls = false;
  // PEM roots that verify the server's certificate. With neither set, gRPC's
  // default roots apply (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH or its bundle).
  std::string root_ca_pem;
  std::string root_ca_file;
  // The client's certificate chain and private key, for mutual TLS. Give both
  // or neither.
  std::string client_cert_pem;
  std::string client_cert_file;
  std::string client_key_pem;
  std::string client_key_file;
  // The name checked against the server's certificate (and sent as SNI and
  // :authority) instead of the host in the address, e.g. when connecting to
  // an IP address whose certificate names a host. Test and debug use.
  std::string server_name_override;
  // Sent as `authorization: Bearer TOKEN` on every call; empty sends none.
  // Without TLS it travels in clear text: fine on loopback only.
  std::string token;
  // Extra metadata sent on every call, e.g. {"x-request-source", "batch"}.
  // Keys are lowercase; a key ending in "-bin" takes binary values.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// A connection to a pyexec server. Cheap to copy: copies share the channel.
// This class is thread-safe.
class Client {
 public:
  // Opens an insecure (plaintext) channel to `address` ("host:port"). The
  // channel connects lazily, so an unreachable server shows up as UNAVAILABLE
  // on the first call. INVALID_ARGUMENT if `address` is empty.
  static absl::StatusOr<Client> Connect(absl::string_view address);

  // Opens a channel to `address` as `options` say. Every call through it,
  // including raw stub() calls, carries the token and metadata (a channel
  // interceptor adds them). INVALID_ARGUMENT for an empty address, an
  // unreadable certificate file, a certificate without its key (or the
  // reverse), or a token or metadata that gRPC cannot send; messages never
  // contain the token. A TLS handshake failure shows up as UNAVAILABLE on the
  // first call.
  static absl::StatusOr<Client> Connect(absl::string_view address,
                                        const ChannelOptions& options);

  // Wraps an existing channel. REQUIRES: `channel` is not null.
  explicit Client(std::shared_ptr<grpc::Channel> channel);

  // Dedicates an interpreter to the caller. `idle_timeout` of zero asks for
  // the server default. RESOURCE_EXHAUSTED when the pool is at its limit.
  absl::StatusOr<BindResult> Bind(absl::Duration idle_timeout = absl::ZeroDuration(),
                                  const CallOptions& options = {}) const;

  // Releases a session. An unknown or expired token is OK.
  absl::Status Unbind(absl::string_view session,
                      const CallOptions& options = {}) const;

  // Evaluates one expression. An empty `session` runs on a pooled
  // interpreter. `locals` are visible to this call only.
  absl::StatusOr<Result> Eval(absl::string_view session, absl::string_view code,
                              const ValueMap& locals = {},
                              const CallOptions& options = {}) const;

  // Executes statements; Result::value is None on success.
  absl::StatusOr<Result> Exec(absl::string_view session, absl::string_view code,
                              const ValueMap& locals = {},
                              const CallOptions& options = {}) const;

  // Calls module.function(*args, **kwargs). `function` may be a dotted path.
  absl::StatusOr<Result> Call(absl::string_view session, absl::string_view module,
                              absl::string_view function,
                              const std::vector<v1::Value>& args = {},
                              const ValueMap& kwargs = {},
                              const CallOptions& options = {}) const;

  // Calls method `method` (a dotted attribute path) of the object `target`
  // refers to, on the session that holds it.
  absl::StatusOr<Result> CallMethod(absl::string_view session, const Ref& target,
                                    absl::string_view method,
                                    const std::vector<v1::Value>& args = {},
                                    const ValueMap& kwargs = {},
                                    const CallOptions& options = {}) const;

  // Reads attribute `name` (a dotted path) of the object `target` refers to.
  absl::StatusOr<Result> GetAttr(absl::string_view session, const Ref& target,
                                 absl::string_view name,
                                 const CallOptions& options = {}) const;

  // Drops refs held by the session; returns how many were live. Unknown ids
  // are ignored.
  absl::StatusOr<uint32_t> ReleaseRefs(absl::string_view session,
                                       const std::vector<std::string>& ref_ids,
                                       const CallOptions& options = {}) const;

  // Interrupts the call running on the session, from any thread; returns
  // false if nothing was running. The interrupted call ends CANCELLED and
  // the session keeps its state.
  absl::StatusOr<bool> Interrupt(absl::string_view session,
                                 const CallOptions& options = {}) const;

  // Exec and Call as streams (see EventStream).
  std::unique_ptr<EventStream<v1::ExecEvent>> ExecStream(
      absl::string_view session, absl::string_view code,
      const ValueMap& locals = {}, const CallOptions& options = {}) const;
  std::unique_ptr<EventStream<v1::CallEvent>> CallStream(
      absl::string_view session, absl::string_view module,
      absl::string_view function, const std::vector<v1::Value>& args = {},
      const ValueMap& kwargs = {}, const CallOptions& options = {}) const;

  // Reads a whole stream into `handlers`. The Result carries the Python
  // error, if any; its output and value are empty (they went to handlers).
  absl::StatusOr<Result> RunExecStream(absl::string_view session,
                                       absl::string_view code,
                                       const StreamHandlers& handlers,
                                       const ValueMap& locals = {},
                                       const CallOptions& options = {}) const;
  absl::StatusOr<Result> RunCallStream(absl::string_view session,
                                       absl::string_view module,
                                       absl::string_view function,
                                       const StreamHandlers& handlers,
                                       const std::vector<v1::Value>& args = {},
                                       const ValueMap& kwargs = {},
                                       const CallOptions& options = {}) const;

  // Returns the server's pool figures.
  absl::StatusOr<v1::GetStatsResponse> GetStats(
      const CallOptions& options = {}) const;

  // The stub, for callers that need the raw RPCs (e.g. benchmarks).
  v1::PyExec::StubInterface& stub() const { return *stub_; }

 private:
  absl::StatusOr<Result> RunCall(const v1::CallRequest& request,
                                 const CallOptions& options) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<v1::PyExec::StubInterface> stub_;
};

// A bound session that is unbound when it goes out of scope. Movable, not
// copyable. Calls are forwarded to the Client with the session's token. Not
// thread-safe for concurrent use of one Session; the server runs one call per
// session at a time anyway.
class Session {
 public:
  // Binds a new session on `client`. See Client::Bind.
  static absl::StatusOr<Session> Bind(
      const Client& client, absl::Duration idle_timeout = absl::ZeroDuration(),
      const CallOptions& options = {});

  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Unbinds the session (best effort, errors ignored) unless already released.
  ~Session();

  // The session token; empty once released or moved from.
  const std::string& token() const { return token_; }

  // The idle timeout the server granted.
  absl::Duration idle_timeout() const { return idle_timeout_; }

  // See Client::Eval. FAILED_PRECONDITION once released or moved from (this
  // holds for Exec and Call too).
  absl::StatusOr<Result> Eval(absl::string_view code, const ValueMap& locals = {},
                              const CallOptions& options = {}) const;

  // See Client::Exec.
  absl::StatusOr<Result> Exec(absl::string_view code, const ValueMap& locals = {},
                              const CallOptions& options = {}) const;

  // See Client::Call.
  absl::StatusOr<Result> Call(absl::string_view module, absl::string_view function,
                              const std::vector<v1::Value>& args = {},
                              const ValueMap& kwargs = {},
                              const CallOptions& options = {}) const;

  // Unbinds now and reports the outcome. Afterwards token() is empty and the
  // destructor does nothing.
  absl::Status Unbind(const CallOptions& options = {});

  // Gives up ownership without unbinding; returns the token.
  std::string Release();

 private:
  Session(Client client, BindResult bound);

  Client client_;
  std::string token_;
  absl::Duration idle_timeout_;
};

template <typename Event>
absl::Status EventStream<Event>::Finish() {
  return FromGrpcStatus(reader_->Finish());
}

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLIENT_H_
