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
#include "grpcpp/server.h"
#include "grpcpp/server_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace fakes {

// What one RPC arrived with.
struct RecordedCall {
  // "Bind", "Unbind", "Eval", "Exec", "Call", "GetStats", "Interrupt" or
  // "Release".
  std::string method;
  // The client's metadata as the server saw it (gRPC's own keys included,
  // e.g. user-agent).
  std::multimap<std::string, std::string> metadata;
  // The CN of the client certificate under mutual TLS; empty otherwise.
  std::string peer_common_name;
};

// A scripted PyExec service. Bind hands out "s1", "s2"... Eval understands:
//   "raise"      -> a ZeroDivisionError result with a traceback
//   "print"      -> None, with stdout "hello\n" and stderr "warn\n"
//   "deadline?"  -> the remaining deadline in seconds as a float, or -1.0
//   "fail:N"     -> gRPC status code N with message "scripted"
//   other code   -> the tuple (session, code, {locals...}), stdout "out",
//                   stderr "err"
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

  // Tokens passed to Unbind, in order.
  std::vector<std::string> unbound() const;

  // The `session` of every Eval/Exec/Call/Interrupt/Release, in order.
  std::vector<std::string> sessions_seen() const;

  // Every RPC received, in order.
  std::vector<RecordedCall> calls() const;

 private:
  void RecordSession(const std::string& session);
  void RecordCall(const std::string& method, const grpc::ServerContext& context);

  mutable absl::Mutex mu_;
  int next_session_ ABSL_GUARDED_BY(mu_) = 0;
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
