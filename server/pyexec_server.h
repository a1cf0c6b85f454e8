#ifndef PYEXEC_SERVER_PYEXEC_SERVER_H_
#define PYEXEC_SERVER_PYEXEC_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/background_job.h"
#include "common/limits.h"
#include "context_pool/context_pool.h"
#include "context_pool/process_worker_launcher.h"
#include "context_pool/worker_output.h"
#include "context_pool/zygote_worker_launcher.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server.h"
#include "server/auth.h"
#include "server/forwarder.h"
#include "server/migrator.h"
#include "server/peer_service.h"
#include "server/snapshot_seal.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/peer_set.h"
#include "server/pyexec_core.h"
#include "server/pyexec_service.h"
#include "server/reflection_service.h"
#include "server/session_table.h"
#include "server/tls.h"

namespace pyexec {

// How worker processes are created.
enum class LauncherKind {
  // Forked from a pre-initialised zygote (about a millisecond, shared
  // preloads).
  kZygote,
  // posix_spawn of pyexec_worker, each initialising its own CPython.
  kSpawn,
};

// Everything pyexecd can be told. Filled from flags in main.cc.
struct ServerOptions {
  // host:port to listen on; port 0 picks a free port.
  std::string listen = "127.0.0.1:50051";
  // Pool sizing and deadlines (see ContextPoolOptions).
  ContextPoolOptions pool;
  // Settings passed to each worker process.
  WorkerProcessOptions worker;
  // How workers are created.
  LauncherKind launcher = LauncherKind::kZygote;
  // Preloads and timeouts of the zygote (kZygote only).
  ZygoteOptions zygote;
  // Session idle timeouts.
  CoreOptions core;
  // Deadline applied to calls that carry none.
  absl::Duration default_timeout = absl::Seconds(30);
  // Longest a call may run, whatever deadline it asks for.
  absl::Duration max_timeout = absl::Hours(1);
  // TLS / mTLS of the listening port.
  TlsOptions tls;
  // Client authentication and peer assertion of principals.
  AuthOptions auth;
  // Serve on a non-loopback address with no client authentication.
  bool allow_unauthenticated = false;
  // Memory gRPC may use for its buffers (a grpc::ResourceQuota); 0 = none.
  size_t grpc_memory_quota_bytes = 1024 << 20;
  // How long SIGTERM waits for in-flight calls before stopping workers.
  absl::Duration drain_timeout = absl::Seconds(30);
  // With peers, a draining replica moves its sessions to them
  // (server/migrator.h) instead of ending them.
  bool migrate_on_drain = true;
  // Largest gRPC message either way.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // How long start-up waits for the warm pool.
  absl::Duration warmup_timeout = absl::Seconds(60);
  // How peers reach this replica (HOST:PORT). Empty: the listen address,
  // unless that is a wildcard.
  std::string advertise_address;
  // The replicas, this one included: "HOST:PORT" or "dns:///NAME:PORT".
  // Empty: run alone, exactly as without scale-out.
  std::vector<std::string> peers;
  // How often dns:/// peers are resolved again.
  absl::Duration peers_refresh_interval = absl::Seconds(5);
  // HOST:PORT of the Prometheus endpoint (GET /metrics); empty: none.
  std::string metrics_listen;
  // HOST:PORT of a plaintext port serving only grpc.health.v1 (probes that
  // present no client certificate); empty: none.
  std::string health_listen;
};

// pyexecd: the gRPC server, the pool, the session table, health and
// reflection, wired together.
//
// Start, then Drain and/or Shutdown from one controlling thread.
class PyExecServer {
 public:
  explicit PyExecServer(ServerOptions options);
  ~PyExecServer();

  // Binds the port, warms the pool and marks health SERVING. Returns the
  // address actually listened on ("127.0.0.1:PORT").
  absl::StatusOr<std::string> Start();

  // Graceful stop: health NOT_SERVING, new binds and calls UNAVAILABLE,
  // in-flight calls get up to drain_timeout. Returns false if calls were
  // still open at the deadline.
  bool Drain();

  // Stops serving, kills the workers and waits for them. Idempotent.
  void Shutdown();

  // Re-reads the tokens and peer secret files now (SIGHUP). On error the
  // previous contents stay in force; the error is logged.
  void ReloadCredentials();

 private:
  void SetServing(bool serving);
  // The periodic jobs (session expiry, orphan reaping, zygote and cgroup
  // upkeep, credential reloads), each on its own thread.
  void StartBackgroundJobs();
  void StopBackgroundJobs();

  // The advertised address: options_.advertise_address or its default.
  absl::StatusOr<std::string> AdvertiseAddress() const;
  MetricsSnapshot Snapshot() const;

  const ServerOptions options_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<PeerSet> peers_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Forwarder> forwarder_;
  // With peers: where moved sessions are, the Peer service, and the mover
  // of this replica's sessions at drain.
  std::unique_ptr<SessionDirectory> directory_;
  std::unique_ptr<PeerService> peer_service_;
  std::unique_ptr<Migrator> migrator_;
  std::unique_ptr<SnapshotSeal> seal_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<ContextPool> pool_;
  // The pool's launcher when it is a zygote (owned by pool_), else null.
  ZygoteWorkerLauncher* zygote_ = nullptr;
  std::unique_ptr<SessionTable> sessions_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<PyExecCore> core_;
  std::unique_ptr<PyExecService> service_;
  std::unique_ptr<ReflectionV1AlphaService> reflection_v1alpha_;
  std::unique_ptr<ReflectionV1Service> reflection_v1_;
  std::unique_ptr<grpc::Server> server_;
  // The plaintext health-only server (--health_listen), or null.
  std::unique_ptr<grpc::Server> health_server_;
  std::unique_ptr<grpc::CallbackGenericService> health_unimplemented_;
  // Drains workers' stdout and stderr into the log.
  std::unique_ptr<WorkerOutputLog> worker_output_;
  std::unique_ptr<BackgroundJob> session_expiry_;
  std::vector<std::unique_ptr<BackgroundJob>> jobs_;
  bool shut_down_ = false;
};

// Replaces the port of a host:port (IPv6 hosts in brackets) with `port`.
std::string WithPort(absl::string_view host_port, int port);

// HOST:PORT with an IPv6 host put in brackets: "fd00::5:50051" (what
// "$(POD_IP):50051" gives with an IPv6 pod address) becomes
// "[fd00::5]:50051". Anything else is returned unchanged.
std::string BracketHostPort(absl::string_view host_port);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PYEXEC_SERVER_H_
