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
//
// Sessions are leased: a session bound through a Client is unbound by the
// server a few seconds (its --lease_grace) after the Client (its last copy,
// Sessions included) goes away or its process dies, even without Unbind.
// BindOptions::lease = false binds without a lease (the session then lives
// until Unbind or its idle timeout).
//
// Python calls back into the program with pyexec.call(name, ...):
//
//   client->RegisterFunction("lookup", [](pyexec::CallbackContext& ctx,
//                                         const std::vector<pyexec::v1::Value>& args,
//                                         const pyexec::ValueMap& kwargs)
//                                          -> absl::StatusOr<pyexec::v1::Value> {
//     return pyexec::MakeStr("alice");
//   });
//   client->Eval("", "pyexec.call('lookup', 42)");   // 'alice'
//
// A call can be started and interrupted by name, never lost:
//
//   pyexec::PendingCall call = session->StartExec("while True: pass");
//   call.Interrupt();                 // interrupts that very call
//   call.Wait().status();             // CANCELLED

#ifndef PYEXEC_CLIENTS_CPP_CLIENT_H_
#define PYEXEC_CLIENTS_CPP_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/cpp/router.h"
#include "clients/cpp/status_util.h"
#include "clients/cpp/value.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {

// Names bound for one call (Eval/Exec `locals`, Call `kwargs`).
using ValueMap = std::map<std::string, v1::Value>;

class CallbackContext;

// A function that Python code calls as pyexec.call(name, *args, **kwargs)
// (or erlang.call). It runs on a thread of its own, one per callback, so
// callbacks of one call may run concurrently. Its value is what
// pyexec.call returns; an error status (or a C++ exception) makes
// pyexec.call raise pyexec.CallbackError with the status code's name (or
// the exception's type) as `type` and the message as `message`. A function
// that may block should watch ctx.cancelled(): the call that asked for it
// returns only once every callback it started has returned.
using CallbackFunction = std::function<absl::StatusOr<v1::Value>(
    CallbackContext& ctx, const std::vector<v1::Value>& args, const ValueMap& kwargs)>;

// Functions by the name Python calls them.
using FunctionMap = std::map<std::string, CallbackFunction>;

// Per-call options.
struct CallOptions {
  // Sent as the gRPC deadline. Zero or infinite sends no deadline, and the
  // server applies its default (30 s unless configured otherwise).
  absl::Duration timeout = absl::ZeroDuration();
  // Eval/Call on a bound session: return the result as a Ref even if it has
  // a Value kind (a big list stays in the server). INVALID_ARGUMENT on a
  // stateless call.
  bool result_as_ref = false;
  // The call's name, sent as the metadata x-pyexec-call-id, so that
  // Client::InterruptCall(session, call_id) interrupts this very call, even
  // if the Interrupt reaches the server before the call does. Empty: the
  // client makes up a unique one (every call carries one).
  std::string call_id;
  // Eval/Exec/Call: functions for this call only, looked up before the
  // ones registered on the client. When set (even empty), the call goes as
  // a Run stream, so that pyexec.call works (an unknown name is then a
  // pyexec.CallbackError, where a plain call raises RuntimeError).
  std::optional<FunctionMap> functions;
};

namespace internal {
struct ClientState;
struct RunShared;
class CallControl;
struct PendingShared;
}  // namespace internal

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
  ~EventStream();

  // The next event; false once the stream has ended (then call Finish).
  // A session stream that fails UNAVAILABLE before its first event (the
  // session moved, or its owner cannot be reached) is sent once more.
  bool Next(Event* event);
  // How the stream ended: OK, or the service-level status (NOT_FOUND,
  // ABORTED, DEADLINE_EXCEEDED, CANCELLED...). Reads and drops the events
  // left, if any.
  absl::Status Finish();
  // Cancels the call; the server interrupts the Python code.
  void Cancel();

 private:
  friend class Client;
  using Opener = std::function<std::unique_ptr<grpc::ClientReaderInterface<Event>>(
      v1::PyExec::StubInterface* stub, grpc::ClientContext* context)>;

  // Starts an attempt; false (status_ set) if the stream was cancelled.
  bool Open(bool fallback);

  std::shared_ptr<internal::ClientState> state_;
  std::string session_;
  absl::Time deadline_ = absl::InfiniteFuture();
  std::string call_id_;
  std::string callback_id_;
  Opener open_;
  internal::Route route_;
  std::unique_ptr<grpc::ClientReaderInterface<Event>> reader_;
  bool got_event_ = false;
  bool finished_ = false;
  int attempts_ = 0;
  absl::Status status_;

  absl::Mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
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

// What Bind does besides binding.
struct BindOptions {
  // Idle timeout of the session; zero asks for the server default. A leased
  // session does not expire while its lease is held.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // Lease the session to this Client: the server unbinds it --lease_grace
  // after the Client's last copy is destroyed, its process dies or its
  // connection is lost for longer than that (see Client::Lease). False:
  // the session lives until Unbind or its idle timeout.
  bool lease = true;
  // A SnapshotResponse blob (Client::Snapshot): the new session starts with
  // that state. INVALID_ARGUMENT if the blob is not one of this
  // deployment's, or is another principal's.
  std::string restore;
};

// What Bind granted.
struct BindResult {
  // Opaque session token for Eval/Exec/Call/Unbind.
  std::string session;
  // The idle timeout the server granted.
  absl::Duration idle_timeout;
  // The address of the replica that holds the session, when the replicas
  // run with --peers; empty otherwise.
  std::string owner;
  // True when the session is leased to the client (BindOptions::lease and a
  // server that confirmed the lease).
  bool leased = false;
  // With BindOptions::restore: the modules that no longer import here, and
  // the error __pyexec_restore__() raised (the state is restored anyway).
  std::vector<v1::LostName> restore_lost;
  std::optional<v1::PythonError> restore_error;
};

// A client's lease on a session, as Client::GetLease reports it.
struct LeaseState {
  // The server confirmed the lease on the current Attach stream. False
  // while the client attaches again (after the session moved to another
  // replica, or the connection dropped).
  bool held = false;
  // How many Attach streams the client has opened for this lease.
  int attaches = 0;
  // How long the session outlives the lease, as the server last said.
  absl::Duration grace;
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
  // Send each session's calls straight to the replica that owns it (its
  // address comes with Bind, BindResponse.owner, and with calls a replica
  // forwarded, x-pyexec-owner), on a channel of its own made with these
  // same options, instead of through `address` (a balancer). For clients
  // that can reach the replicas (inside the cluster). A call the owner does
  // not take (it cannot be reached within owner_connect_timeout, or answers
  // UNAVAILABLE) goes to `address` instead, and that owner is skipped for a
  // while. Owner channels are cached and closed with the client.
  bool route_to_owner = false;
  absl::Duration owner_connect_timeout = absl::Seconds(1);
};

class Client;

// What a registered function is told about the callback it serves. Valid
// only during the function's call (copy client() to keep it).
class CallbackContext {
 public:
  CallbackContext(const CallbackContext&) = delete;
  CallbackContext& operator=(const CallbackContext&) = delete;

  // The callback's id (CallbackRequest.id) and the name Python called.
  const std::string& id() const { return id_; }
  const std::string& name() const { return name_; }
  // The session of the call Python runs in; empty for a stateless call.
  const std::string& session() const { return session_; }
  // A Client whose calls name this callback (x-pyexec-callback), so that
  // calls on session() run on the interpreter that waits for this callback
  // (re-entry) instead of queueing behind it. Calls made through any copy
  // of the registering Client on the function's own thread do the same.
  const Client& client() const { return *client_; }
  // True once the call that asked for the callback has ended (answered,
  // failed, cancelled): the answer is no longer wanted.
  bool cancelled() const;
  // Waits until cancelled() or `timeout`; returns cancelled().
  bool WaitForCancellation(absl::Duration timeout) const;

 private:
  friend struct internal::RunShared;
  CallbackContext(std::string id, std::string name, std::string session,
                  const Client* client, std::shared_ptr<internal::RunShared> run)
      : id_(std::move(id)), name_(std::move(name)), session_(std::move(session)),
        client_(client), run_(std::move(run)) {}

  std::string id_;
  std::string name_;
  std::string session_;
  const Client* client_;
  std::shared_ptr<internal::RunShared> run_;
};

class PendingCall;

// A connection to a pyexec server. Cheap to copy: copies share the channel,
// the registered functions and the leases; the leases end when the last copy
// (Sessions and PendingCalls hold one) is destroyed.
//
// Every session call (Eval, Exec, Call, streams, Release, Interrupt,
// Snapshot, Unbind) that fails UNAVAILABLE is sent once more: the server
// refuses with UNAVAILABLE only calls it did not run (draining, a session
// being moved to another replica, an owner that cannot be reached). A call
// that gRPC ends CANCELLED without the client having cancelled it (a server
// shutting down, grpc/grpc#41785) is reported as UNAVAILABLE too.
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

  // Wraps an existing channel (no owner routing). REQUIRES: `channel` is
  // not null.
  explicit Client(std::shared_ptr<grpc::Channel> channel);

  // Dedicates an interpreter to the caller, leased to this client (see
  // BindOptions). `idle_timeout` of zero asks for the server default.
  // RESOURCE_EXHAUSTED when the pool is at its limit.
  absl::StatusOr<BindResult> Bind(absl::Duration idle_timeout = absl::ZeroDuration(),
                                  const CallOptions& options = {}) const;
  absl::StatusOr<BindResult> Bind(const BindOptions& bind,
                                  const CallOptions& options = {}) const;

  // Releases a session, and the client's lease on it. An unknown or expired
  // token is OK.
  absl::Status Unbind(absl::string_view session,
                      const CallOptions& options = {}) const;

  // Leases `session` (bound elsewhere, or without a lease) to this client:
  // an Attach stream held open until Unbind or EndLease through a copy of
  // this client, or the last copy's destruction. Waits until the server
  // confirms it (or options.timeout, default 10 s: DEADLINE_EXCEEDED, the
  // client keeps trying). NOT_FOUND for an unknown session; UNIMPLEMENTED
  // for a server without leases. Leasing a leased session changes nothing.
  // The stream is attached again when it breaks (the session moved, the
  // connection dropped) until the session is gone.
  absl::Status Lease(absl::string_view session, const CallOptions& options = {}) const;

  // Ends this client's lease on `session`, if any; the session is unbound
  // after the server's lease grace unless another lease holds it.
  void EndLease(absl::string_view session) const;

  // This client's lease on `session`, or nothing if it holds none.
  std::optional<LeaseState> GetLease(absl::string_view session) const;

  // Registers `fn` as `name` for pyexec.call(name, ...) (see
  // CallbackFunction), replacing any function of that name. While any
  // function is registered, Eval, Exec and Call are sent as Run streams that
  // carry the callbacks (a little slower than plain calls).
  void RegisterFunction(std::string name, CallbackFunction fn) const;

  // Drops the function registered as `name`; false if there was none.
  bool UnregisterFunction(absl::string_view name) const;

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

  // Eval, Exec and Call started on a thread of their own: the PendingCall
  // names the call (PendingCall::Interrupt) and gives its result.
  PendingCall StartEval(absl::string_view session, absl::string_view code,
                        const ValueMap& locals = {}, const CallOptions& options = {}) const;
  PendingCall StartExec(absl::string_view session, absl::string_view code,
                        const ValueMap& locals = {}, const CallOptions& options = {}) const;
  PendingCall StartCall(absl::string_view session, absl::string_view module,
                        absl::string_view function, const std::vector<v1::Value>& args = {},
                        const ValueMap& kwargs = {}, const CallOptions& options = {}) const;

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

  // Interrupts the call running on the session (else the first one
  // waiting), from any thread; returns false if there was none. The
  // interrupted call ends CANCELLED and the session keeps its state. Racy
  // right after starting a call: the call may not have reached the server
  // yet; use InterruptCall or PendingCall::Interrupt for a call you started.
  absl::StatusOr<bool> Interrupt(absl::string_view session,
                                 const CallOptions& options = {}) const;

  // Interrupts the call named `call_id` (CallOptions::call_id) on the
  // session. An Interrupt that arrives before its call is kept by the
  // server for a while (10 s), and the call ends CANCELLED as soon as it
  // comes: true in that case too. False: that call has already ended.
  absl::StatusOr<bool> InterruptCall(absl::string_view session, absl::string_view call_id,
                                     const CallOptions& options = {}) const;

  // Serializes the session's state (its __main__ namespace, imported
  // modules, live refs) into a blob for BindOptions::restore; the session
  // carries on unchanged. `lost` lists the names it could not carry.
  absl::StatusOr<v1::SnapshotResponse> Snapshot(absl::string_view session,
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

  // The owner address the client knows for `session` (route_to_owner), or
  // "".
  std::string OwnerOf(absl::string_view session) const;

  // The stub of the client's target, for callers that need the raw RPCs
  // (e.g. benchmarks).
  v1::PyExec::StubInterface& stub() const;

 private:
  friend class PendingCall;
  friend class Session;
  friend struct internal::RunShared;

  // A PendingCall that is already done with `status`.
  PendingCall Failed(absl::Status status) const;

  Client(std::shared_ptr<internal::ClientState> state, std::string callback_id)
      : state_(std::move(state)), callback_id_(std::move(callback_id)) {}

  // Eval, Exec or Call (the one set in `request`), as a plain call or, with
  // registered functions, as a Run stream; `control` (may be null) cancels.
  absl::StatusOr<Result> Perform(absl::string_view session, const v1::RunRequest& request,
                                 const CallOptions& options,
                                 internal::CallControl* control) const;
  PendingCall Start(std::string session, v1::RunRequest request, CallOptions options) const;
  // The callback this call runs in, for x-pyexec-callback, or "".
  std::string CallbackId() const;

  std::shared_ptr<internal::ClientState> state_;
  // Set on CallbackContext::client(): every call names that callback.
  std::string callback_id_;
};

// An Eval, Exec or Call running on a thread of its own (Client::Start*,
// Session::Start*). Movable. Destroying a PendingCall that has not finished
// cancels the call and waits for it. Thread-safe, except for moving.
class PendingCall {
 public:
  PendingCall(PendingCall&& other) noexcept = default;
  PendingCall& operator=(PendingCall&& other) noexcept;
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  ~PendingCall();

  // The name the call was sent with (x-pyexec-call-id).
  const std::string& call_id() const;

  // Interrupts this very call, whether or not it has reached the server yet
  // (Client::InterruptCall): true when the server interrupted it or kept the
  // Interrupt for it; the call then ends CANCELLED and the session keeps its
  // state. FAILED_PRECONDITION for a stateless call (use Cancel).
  absl::StatusOr<bool> Interrupt(const CallOptions& options = {}) const;

  // Cancels the RPC (the server interrupts the Python code); the call ends
  // CANCELLED.
  void Cancel() const;

  // True once the call has ended.
  bool Done() const;
  // Waits up to `timeout` for the call to end; returns Done().
  bool WaitFor(absl::Duration timeout) const;
  // Waits for the call to end and returns its outcome (the same on every
  // call).
  absl::StatusOr<Result> Wait();

 private:
  friend class Client;
  PendingCall(std::shared_ptr<internal::PendingShared> shared, std::thread thread)
      : shared_(std::move(shared)), thread_(std::move(thread)) {}

  std::shared_ptr<internal::PendingShared> shared_;
  std::thread thread_;
};

// A bound session that is unbound when it goes out of scope. Movable, not
// copyable. Calls are forwarded to the Client with the session's token. The
// session is leased to the Client (unless BindOptions::lease is false), so
// it also ends when the program dies without unbinding. Not thread-safe for
// concurrent use of one Session, except Interrupt and the PendingCalls it
// starts; the server runs one call per session at a time anyway.
class Session {
 public:
  // Binds a new session on `client`. See Client::Bind.
  static absl::StatusOr<Session> Bind(
      const Client& client, absl::Duration idle_timeout = absl::ZeroDuration(),
      const CallOptions& options = {});
  static absl::StatusOr<Session> Bind(const Client& client, const BindOptions& bind,
                                      const CallOptions& options = {});

  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Unbinds the session (best effort, errors ignored) unless already released.
  ~Session();

  // The session token; empty once released or moved from.
  const std::string& token() const { return token_; }

  // What Bind granted (token, owner, lease, restore outcome).
  const BindResult& bound() const { return bound_; }

  // The idle timeout the server granted.
  absl::Duration idle_timeout() const { return bound_.idle_timeout; }

  // See Client::Eval. FAILED_PRECONDITION once released or moved from (this
  // holds for every call below).
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

  // See Client::StartEval, StartExec, StartCall. A released session's
  // PendingCall is already done, with FAILED_PRECONDITION.
  PendingCall StartEval(absl::string_view code, const ValueMap& locals = {},
                        const CallOptions& options = {}) const;
  PendingCall StartExec(absl::string_view code, const ValueMap& locals = {},
                        const CallOptions& options = {}) const;
  PendingCall StartCall(absl::string_view module, absl::string_view function,
                        const std::vector<v1::Value>& args = {}, const ValueMap& kwargs = {},
                        const CallOptions& options = {}) const;

  // See Client::Interrupt (whatever runs on the session).
  absl::StatusOr<bool> Interrupt(const CallOptions& options = {}) const;

  // See Client::Snapshot.
  absl::StatusOr<v1::SnapshotResponse> Snapshot(const CallOptions& options = {}) const;

  // Unbinds now and reports the outcome. Afterwards token() is empty and the
  // destructor does nothing.
  absl::Status Unbind(const CallOptions& options = {});

  // Gives up ownership without unbinding; returns the token. A lease stays
  // with the Client (until Client::EndLease or the Client's end).
  std::string Release();

 private:
  Session(Client client, BindResult bound);

  Client client_;
  std::string token_;
  BindResult bound_;
};

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLIENT_H_
