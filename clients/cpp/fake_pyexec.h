// A scripted in-process PyExec server for tests of clients and the CLI.

#ifndef PYEXEC_CLIENTS_CPP_FAKE_PYEXEC_H_
#define PYEXEC_CLIENTS_CPP_FAKE_PYEXEC_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "grpcpp/server_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace fakes {

// What one RPC arrived with.
struct RecordedCall {
  // "Bind", "Unbind", "Eval", "Exec", "Call", "GetStats", "Interrupt",
  // "Release", "Attach", "Run" or "Snapshot".
  std::string method;
  // The client's metadata as the server saw it (gRPC's own keys included,
  // e.g. user-agent).
  std::multimap<std::string, std::string> metadata;
  // The CN of the client certificate under mutual TLS; empty otherwise.
  std::string peer_common_name;
};

// A scripted PyExec service. Bind hands out "s1", "s2"... (with
// BindRequest.restore "snap:X", the restored session lists a lost module
// "gone_module"), and names set_owner()'s owner. Eval understands:
//   "raise"      -> a ZeroDivisionError result with a traceback
//   "print"      -> None, with stdout "hello\n" and stderr "warn\n"
//   "deadline?"  -> the remaining deadline in seconds as a float, or -1.0
//   "fail:N"     -> gRPC status code N with message "scripted"
//   "once:N:KEY" -> the first Eval with this code fails with code N and the
//                   bare message "CANCELLED" (as gRPC core ends a call when
//                   the server shuts down), later ones answer as below
//   "sleep"      -> waits until the client cancels the call (CANCELLED)
//   other code   -> the tuple (session, code, {locals...}), stdout "out",
//                   stderr "err"
// Every Eval answer carries the initial metadata x-pyexec-owner when
// set_owner_header() was given one.
// Run: the first message is an Eval whose code is "cb NAME..." (one or more
// names): the server asks for one callback per name at once (ids "cb1",
// "cb2"..., args: the Eval's local "x" if any), waits for every answer, and
// answers with the list of outcomes: the value, or the string
// "error TYPE: MESSAGE". Any other first message is answered as the unary
// call would be. It then waits for the client's half-close (counted by
// run_half_closes()).
// Attach: NOT_FOUND for a session starting with "gone"; else `attached`
// (grace 1 s), then for "moved..." the first stream of the session ends
// UNAVAILABLE after 50 ms, for "ends..." `ended` follows after 50 ms;
// otherwise the stream stays open until the client cancels it.
// Snapshot: blob "snap:SESSION", one lost name "sock".
// Exec echoes the code to stdout ("raise" gives a ValueError result). Call
// returns [module, function, *args, *((k, v) for kwargs)]. GetStats reports
// num_workers=4, available_workers=3. Interrupt answers NOT_FOUND for a
// session starting with "gone", interrupted=true for one starting with
// "busy", else false. Release answers NOT_FOUND for "gone..." sessions, else
// counts the ids that start with "live". Every call's metadata is recorded
// (see calls()). This class is thread-safe.
class FakePyExec final : public v1::PyExec::Service {
 public:
  grpc::Status Bind(grpc::ServerContext* context, const v1::BindRequest* request,
                    v1::BindResponse* response) override;
  grpc::Status Unbind(grpc::ServerContext* context,
                      const v1::UnbindRequest* request,
                      v1::UnbindResponse* response) override;
  grpc::Status Eval(grpc::ServerContext* context, const v1::EvalRequest* request,
                    v1::EvalResponse* response) override;
  grpc::Status Exec(grpc::ServerContext* context, const v1::ExecRequest* request,
                    v1::ExecResponse* response) override;
  grpc::Status Call(grpc::ServerContext* context, const v1::CallRequest* request,
                    v1::CallResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context,
                        const v1::GetStatsRequest* request,
                        v1::GetStatsResponse* response) override;
  grpc::Status Interrupt(grpc::ServerContext* context,
                         const v1::InterruptRequest* request,
                         v1::InterruptResponse* response) override;
  grpc::Status Release(grpc::ServerContext* context,
                       const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override;
  grpc::Status Attach(grpc::ServerContext* context, const v1::AttachRequest* request,
                      grpc::ServerWriter<v1::AttachEvent>* writer) override;
  grpc::Status Run(grpc::ServerContext* context,
                   grpc::ServerReaderWriter<v1::RunEvent, v1::RunRequest>* stream) override;
  grpc::Status Snapshot(grpc::ServerContext* context, const v1::SnapshotRequest* request,
                        v1::SnapshotResponse* response) override;

  // BindResponse.owner from now on ("" for none).
  void set_owner(const std::string& owner);
  // The x-pyexec-owner metadata of Eval answers from now on ("" for none).
  void set_owner_header(const std::string& owner);

  // Attach streams open now, and started so far, for `session`.
  int open_leases(const std::string& session) const;
  int attaches(const std::string& session) const;

  // InterruptRequest.call_id of every Interrupt, in order.
  std::vector<std::string> interrupt_call_ids() const;

  // Run streams that the client half-closed after the response.
  int run_half_closes() const;

  // Makes the blocking handlers (Attach, "sleep") return; called before the
  // server shuts down.
  void Stop();

  // Tokens passed to Unbind, in order.
  std::vector<std::string> unbound() const;

  // The `session` of every Eval/Exec/Call/Interrupt/Release, in order.
  std::vector<std::string> sessions_seen() const;

  // Every RPC received, in order.
  std::vector<RecordedCall> calls() const;

 private:
  void RecordSession(const std::string& session);
  void RecordCall(const std::string& method, const grpc::ServerContext& context);
  // Waits until the client cancels or Stop(); false after Stop().
  bool WaitForCancel(grpc::ServerContext* context, absl::Duration max);
  bool stopped() const;

  mutable absl::Mutex mu_;
  int next_session_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::string owner_ ABSL_GUARDED_BY(mu_);
  std::string owner_header_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> failed_once_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> open_leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> attaches_ ABSL_GUARDED_BY(mu_);
  int run_half_closes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> interrupt_call_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unbound_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> sessions_seen_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedCall> calls_ ABSL_GUARDED_BY(mu_);
};

// TLS settings of a FakePyExecServer.
struct FakeTls {
  // The server's certificate chain and private key, PEM.
  std::string cert_pem;
  std::string key_pem;
  // When set, clients must present a certificate that this CA (PEM) signed.
  std::string client_ca_pem;
};

// A FakePyExec served on 127.0.0.1 on a free port, shut down on destruction.
class FakePyExecServer {
 public:
  // Starts serving plaintext. Crashes if the server cannot start.
  FakePyExecServer();
  // Starts serving, over TLS when `tls` is set.
  explicit FakePyExecServer(const std::optional<FakeTls>& tls);
  ~FakePyExecServer();

  // "127.0.0.1:PORT".
  const std::string& address() const { return address_; }

  // The service, to inspect what it received.
  FakePyExec& service() { return service_; }

 private:
  FakePyExec service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace fakes
}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_FAKE_PYEXEC_H_
