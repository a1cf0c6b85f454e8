#include "server/pyexec_server.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/thread_name.h"
#include "common/background_job.h"
#include "context_pool/orphan_reaper.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace pyexec {
namespace {

constexpr char kPyExecServiceName[] = "pyexec.v1.PyExec";

bool IsWildcardHost(absl::string_view host) {
  return host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::" ||
         host == "*";
}

}  // namespace

std::string WithPort(absl::string_view host_port, int port) {
  size_t colon = host_port.rfind(':');
  absl::string_view host =
      colon == absl::string_view::npos ? host_port : host_port.substr(0, colon);
  return absl::StrCat(host, ":", port);
}

std::string BracketHostPort(absl::string_view host_port) {
  if (host_port.empty() || host_port[0] == '[' ||
      std::count(host_port.begin(), host_port.end(), ':') < 2) {
    return std::string(host_port);
  }
  size_t colon = host_port.rfind(':');
  return absl::StrCat("[", host_port.substr(0, colon), "]", host_port.substr(colon));
}

PyExecServer::PyExecServer(ServerOptions options)
    : options_(std::move(options)) {}

PyExecServer::~PyExecServer() { Shutdown(); }

absl::StatusOr<std::string> PyExecServer::AdvertiseAddress() const {
  if (!options_.advertise_address.empty()) return options_.advertise_address;
  size_t colon = options_.listen.rfind(':');
  absl::string_view host = colon == std::string::npos
                               ? absl::string_view()
                               : absl::string_view(options_.listen).substr(0, colon);
  if (options_.peers.empty()) return std::string();  // filled in once listening
  if (IsWildcardHost(host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen=", options_.listen,
        " is a wildcard: with --peers, set --advertise_address to the address "
        "peers reach this replica at (in Kubernetes: $(POD_IP):PORT)"));
  }
  if (absl::EndsWith(options_.listen, ":0")) {
    return absl::InvalidArgumentError(
        "with --peers and --listen on port 0, set --advertise_address: peers "
        "must know the port in advance");
  }
  return options_.listen;
}

MetricsSnapshot PyExecServer::Snapshot() const {
  PoolStats stats = pool_->GetStats();
  MetricsSnapshot s;
  s.idle_workers = stats.available_workers;
  s.busy_workers = stats.busy_workers;
  s.bound_workers = stats.checked_out;
  s.starting_workers = stats.starting_workers;
  s.max_workers = pool_->max_workers();
  s.pending_calls = stats.pending_requests;
  s.sessions = static_cast<int>(sessions_->size());
  s.draining = draining_.load();
  s.peers = peers_ == nullptr ? 0 : peers_->size();
  s.workers_spawned = stats.workers_spawned;
  s.worker_deaths = std::move(stats.deaths_by_reason);
  return s;
}

absl::StatusOr<std::string> PyExecServer::Start() {
  // Workers' stdout and stderr: into our log, never onto our terminal.
  absl::StatusOr<std::unique_ptr<WorkerOutputLog>> output =
      WorkerOutputLog::Start(WorkerOutputLog::Options());
  if (!output.ok()) return output.status();
  worker_output_ = *std::move(output);
  WorkerProcessOptions worker = options_.worker;
  worker.output_fd = worker_output_->write_fd();
  // The zygote is exec'd first, before any gRPC thread exists, and is the
  // only process that forks (grpc/grpc#22624).
  std::unique_ptr<WorkerLauncher> launcher;
  if (options_.launcher == LauncherKind::kZygote) {
    auto zygote = std::make_unique<ZygoteWorkerLauncher>(worker, options_.zygote);
    if (absl::Status s = zygote->Start(); !s.ok()) return s;
    zygote_ = zygote.get();
    launcher = std::move(zygote);
  } else {
    launcher = std::make_unique<ProcessWorkerLauncher>(worker);
  }
  AuthOptions auth_options = options_.auth;
  auth_options.mtls = options_.tls.mtls();
  absl::StatusOr<std::unique_ptr<Authenticator>> auth =
      Authenticator::Create(auth_options);
  if (!auth.ok()) return auth.status();
  auth_ = std::move(*auth);
  if (absl::Status safe = CheckListenIsSafe(options_.listen, auth_->enabled(),
                                            options_.allow_unauthenticated);
      !safe.ok()) {
    return safe;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options_.tls);
  if (!credentials.ok()) return credentials.status();

  absl::StatusOr<std::string> advertise = AdvertiseAddress();
  if (!advertise.ok()) return advertise.status();
  std::string token_prefix;
  if (!options_.peers.empty()) {
    PeerSetOptions peer_options;
    peer_options.entries = options_.peers;
    peer_options.self_address = *advertise;
    peer_options.refresh_interval = options_.peers_refresh_interval;
    const int max_message_bytes = options_.max_message_bytes;
    // TLS to peers with this replica's own certificate as client
    // certificate (mTLS peers), plaintext when TLS is off.
    std::shared_ptr<grpc::ChannelCredentials> peer_credentials =
        MakePeerChannelCredentials(options_.tls);
    peer_options.make_channel = [max_message_bytes, peer_credentials](
                                    const std::string& address) {
      return PeerChannel(address, max_message_bytes, peer_credentials);
    };
    absl::StatusOr<std::unique_ptr<PeerSet>> peers =
        PeerSet::Create(std::move(peer_options));
    if (!peers.ok()) return peers.status();
    peers_ = std::move(*peers);
    token_prefix = absl::StrCat(peers_->self_id(), ".");
    // Before serving: a call that arrives early must find the peers.
    peers_->Start();
    LogInfo(absl::StrCat("replica ", peers_->self_id(), " advertised as ",
                         *advertise, "; ", peers_->size(), " peers found"));
  }
  if (!options_.metrics_listen.empty()) {
    metrics_ = std::make_unique<Metrics>([this] { return Snapshot(); });
  }
  if (peers_ != nullptr) {
    forwarder_ = std::make_unique<Forwarder>(peers_.get(), metrics_.get(),
                                             options_.default_timeout, auth_.get());
  }
  pool_ = std::make_unique<ContextPool>(options_.pool, std::move(launcher));
  sessions_ = std::make_unique<SessionTable>(MonotonicNow, token_prefix,
                                             options_.core.lease_grace);
  core_ = std::make_unique<PyExecCore>(options_.core, sessions_.get(), pool_.get(),
                                       token_prefix);
  seal_ = std::make_unique<SnapshotSeal>(auth_->peer_secret());
  core_->SetSnapshotSeal(seal_.get());
  if (peers_ != nullptr) {
    directory_ = std::make_unique<SessionDirectory>(peers_.get(), auth_.get());
    SessionTable* sessions = sessions_.get();
    forwarder_->SetSessionLocator(
        [sessions](absl::string_view token) { return sessions->Holds(token); },
        directory_.get());
    ContextPool* pool = pool_.get();
    peer_service_ = std::make_unique<PeerService>(
        sessions_.get(), auth_.get(), [pool]() -> uint32_t {
          if (pool->draining()) return 0;  // a draining replica takes no sessions
          return static_cast<uint32_t>(std::max(0, pool->max_workers() - pool->GetStats().checked_out));
        });
    SessionDirectory* directory = directory_.get();
    core_->SetSessionGoneListener([directory](const std::string& token) { directory->Ended(token); });
    migrator_ = std::make_unique<Migrator>(core_.get(), sessions_.get(), peers_.get(),
                                           directory_.get(), auth_.get(), metrics_.get());
  }
  PyExecCore* core = core_.get();
  pool_->SetWorkerLostListener(
      [core](WorkerId worker, const std::string& reason) {
        core->OnWorkerLost(worker, reason);
      });
  service_ = std::make_unique<PyExecService>(
      core, auth_.get(), options_.default_timeout, options_.max_timeout,
      forwarder_.get(), metrics_.get());

  // Link the health messages' descriptors so that reflection can describe
  // the built-in Health service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  std::vector<std::string> services = {
      kPyExecServiceName, "grpc.health.v1.Health",
      "grpc.reflection.v1alpha.ServerReflection",
      "grpc.reflection.v1.ServerReflection"};
  reflection_v1alpha_ = std::make_unique<ReflectionV1AlphaService>(services);
  reflection_v1_ = std::make_unique<ReflectionV1Service>(services);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options_.listen, *credentials, &port);
  if (options_.grpc_memory_quota_bytes > 0) {
    grpc::ResourceQuota quota("pyexecd");
    quota.Resize(options_.grpc_memory_quota_bytes);
    builder.SetResourceQuota(quota);
  }
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.RegisterService(service_.get());
  builder.RegisterService(reflection_v1alpha_.get());
  builder.RegisterService(reflection_v1_.get());
  if (peer_service_ != nullptr) builder.RegisterService(peer_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen));
  }
  if (!options_.health_listen.empty()) {
    // Its own server: a grpc::Server serves every registered service on all
    // its ports, and this port must serve health alone, in plaintext.
    grpc::ServerBuilder health_builder;
    int health_port = 0;
    health_builder.AddListeningPort(options_.health_listen,
                                    grpc::InsecureServerCredentials(), &health_port);
    // A server with no service of its own polls nothing and does not
    // start; the stock generic service answers every other method
    // UNIMPLEMENTED.
    health_unimplemented_ = std::make_unique<grpc::CallbackGenericService>();
    health_builder.RegisterCallbackGenericService(health_unimplemented_.get());
    health_server_ = health_builder.BuildAndStart();
    if (health_server_ == nullptr || health_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("--health_listen: cannot listen on ", options_.health_listen));
    }
    LogInfo(absl::StrCat("health on ", WithPort(options_.health_listen, health_port),
                         " (plaintext, grpc.health.v1 only)"));
  }
  SetServing(false);
  std::string address = WithPort(options_.listen, port);
  core_->SetReplica(advertise->empty() ? address : *advertise,
                    /*clients_may_dial=*/!advertise->empty() && peers_ != nullptr);

  if (absl::Status s = pool_->Start(); !s.ok()) return s;
  if (!pool_->WaitUntilWarm(options_.warmup_timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the worker pool did not warm up within ",
        absl::FormatDuration(options_.warmup_timeout),
        " (is --worker_binary right? see the log above)"));
  }
  StartBackgroundJobs();
  if (metrics_ != nullptr) {
    Metrics* metrics = metrics_.get();
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
        MetricsHttpServer::Start(options_.metrics_listen,
                                 [metrics] { return metrics->Render(); });
    if (!http.ok()) return http.status();
    metrics_http_ = std::move(*http);
    LogInfo(absl::StrCat("metrics on http://", metrics_http_->address(),
                         "/metrics"));
  }
  SetServing(true);
  LogInfo(absl::StrCat("serving on ", address, " with ", options_.pool.workers,
                       " warm workers, at most ", options_.pool.max_workers,
                       " sessions; ", options_.tls.enabled() ? "TLS" : "plaintext",
                       options_.tls.mtls() ? " with client certificates" : "",
                       ", authentication ",
                       auth_->enabled()
                           ? absl::StrCat("on (", auth_->token_count(), " tokens)")
                           : "off"));
  return address;
}

void PyExecServer::SetServing(bool serving) {
  for (grpc::Server* server : {server_.get(), health_server_.get()}) {
    if (server == nullptr) continue;
    grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
    if (health == nullptr) continue;
    health->SetServingStatus(serving);
    health->SetServingStatus(kPyExecServiceName, serving);
  }
}

void PyExecServer::StartBackgroundJobs() {
  // Each job on a thread of its own, so that a slow one (a zygote restart, a
  // credentials file on a slow volume) never delays another.
  constexpr absl::Duration kTick = absl::Seconds(1);
  // Sessions expire when they are due: the table says when the next one is,
  // and wakes the job when a sooner one appears (a lease that ends).
  session_expiry_ = std::make_unique<BackgroundJob>("session-expiry", kTick, [this] {
    core_->ReapExpiredSessions();
    return sessions_->TimeToNextExpiry();
  });
  BackgroundJob* expiry = session_expiry_.get();
  sessions_->SetExpiryWake([expiry] { expiry->Wake(); });
  // The zombies of processes that outlived their worker (pyexecd is PID 1 in
  // a container; see context_pool/orphan_reaper.h).
  jobs_.push_back(std::make_unique<BackgroundJob>("orphan-reaper", kTick, [this] {
    ReapOrphanedChildren();
    return absl::InfiniteDuration();
  }));
  // A zygote that died is replaced, so that its workers are guarded again.
  if (zygote_ != nullptr) {
    jobs_.push_back(std::make_unique<BackgroundJob>("zygote-watch", kTick, [this] {
      zygote_->RestartIfDead();
      return absl::InfiniteDuration();
    }));
  }
  if (options_.worker.cgroups != nullptr) {
    jobs_.push_back(std::make_unique<BackgroundJob>("cgroup-sweep", kTick, [this] {
      options_.worker.cgroups->Sweep();
      return absl::InfiniteDuration();
    }));
  }
  // Credential files are re-read when they change (a rotated Secret).
  if (auth_ == nullptr) return;
  jobs_.push_back(std::make_unique<BackgroundJob>("cred-reload", kTick, [this] {
    absl::StatusOr<bool> reloaded = auth_->ReloadIfChanged();
    if (!reloaded.ok()) {
      LogError(absl::StrCat("credentials not reloaded (keeping the previous ones): ",
                            reloaded.status().message()));
    } else if (*reloaded) {
      LogInfo(absl::StrCat("credentials reloaded after a change (",
                           auth_->token_count(), " tokens)"));
    }
    return absl::InfiniteDuration();
  }));
}

void PyExecServer::StopBackgroundJobs() {
  if (session_expiry_ != nullptr) {
    sessions_->SetExpiryWake(nullptr);
    session_expiry_.reset();
  }
  jobs_.clear();
}

void PyExecServer::ReloadCredentials() {
  if (auth_ == nullptr) return;
  if (absl::Status s = auth_->Reload(); !s.ok()) {
    LogError(absl::StrCat("credentials not reloaded (keeping the previous ones): ",
                          s.message()));
    return;
  }
  LogInfo(absl::StrCat("credentials reloaded (", auth_->token_count(), " tokens)"));
}

bool PyExecServer::Drain() {
  LogInfo(absl::StrCat("draining: waiting up to ",
                       absl::FormatDuration(options_.drain_timeout),
                       " for calls in flight"));
  SetServing(false);
  draining_ = true;
  const absl::Time deadline = absl::Now() + options_.drain_timeout;
  const bool migrate = migrator_ != nullptr && options_.migrate_on_drain;
  // Moving sessions: their calls carry on until each one's move starts (its
  // snapshot waits behind them); binds and stateless calls stop now.
  pool_->BeginDrain(/*keep_session_calls=*/migrate);
  if (migrate) migrator_->MoveAll(deadline);
  bool finished = pool_->WaitForCallsToFinish(deadline);
  if (!finished) LogWarning("drain timed out; stopping calls still running");
  return finished;
}

void PyExecServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // Scrapes read the pool: stop them before it goes.
  metrics_http_.reset();
  StopBackgroundJobs();
  // Attach streams end with the reason, then the pool stops: open calls end
  // UNAVAILABLE, which completes their reactors, so the gRPC shutdown below
  // does not wait on them (nor cancel them at its deadline).
  if (core_ != nullptr) core_->EndAllLeases("the server is shutting down");
  if (pool_ != nullptr) pool_->Shutdown();
  if (server_ != nullptr) {
    // Calls were drained above. gRPC 1.51 otherwise waits out the whole
    // deadline whenever a client still holds an idle connection open.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now());
    health_server_->Wait();
  }
  worker_output_.reset();
  LogInfo("stopped");
}

}  // namespace pyexec
