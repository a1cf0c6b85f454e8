// pyexecd: runs Python for programs written in any language, over gRPC.
// Flags are defined here only; they fill ServerOptions.

#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "common/logging.h"
#include "context_pool/orphan_reaper.h"
#include "context_pool/private_dir.h"
#include "context_pool/uid_pool.h"
#include "context_pool/worker_cgroups.h"
#include "context_pool/worker_environment.h"
#include "server/file_limit.h"
#include "server/isolation.h"
#include "server/pyexec_server.h"
#include "worker/confinement.h"
#include "worker/landlock.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "host:port to listen on; port 0 picks a free port.");
ABSL_FLAG(int, workers, 4,
          "Idle interpreters kept warm for stateless calls and fast binds.");
ABSL_FLAG(int, max_workers, 16,
          "Most interpreters bound to sessions at once; Bind past it answers "
          "RESOURCE_EXHAUSTED no_workers_available.");
ABSL_FLAG(int, max_pending, 1024,
          "Most calls waiting for a worker; more answer RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, session_idle_timeout, absl::Minutes(10),
          "Idle time after which a session is unbound (Bind may ask for its "
          "own).");
ABSL_FLAG(bool, migrate_on_drain, true,
          "With --peers, a draining replica (SIGTERM) moves its sessions to its "
          "peers (snapshot, restore, the same tokens) instead of ending them.");
ABSL_FLAG(uint64_t, max_snapshot_bytes, 48 << 20,
          "Largest session snapshot (Snapshot, Bind{restore}, and moves at drain); "
          "at most --max_message_bytes less 64 KiB.");
ABSL_FLAG(absl::Duration, lease_grace, absl::Seconds(5),
          "How long a leased session (one with an Attach stream open) outlives "
          "the end of its last Attach stream: its client may reconnect and "
          "Attach again inside it. Then the session is unbound.");
ABSL_FLAG(absl::Duration, max_session_idle_timeout, absl::Hours(24),
          "Longest idle timeout a Bind may ask for.");
ABSL_FLAG(uint32_t, max_refs_per_session, 10000,
          "Live object references (Value.ref) a session may hold; a result "
          "that would make more answers RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, default_timeout, absl::Seconds(30),
          "Deadline of calls that carry none.");
ABSL_FLAG(absl::Duration, io_spin, absl::ZeroDuration(),
          "Longest time the pool's I/O thread polls for a worker's answer before "
          "it sleeps, while fewer calls run than there are CPUs (0: never). "
          "Adapts between a tenth of this and this, as haltpoll does; see "
          "docs/performance.md.");
ABSL_FLAG(absl::Duration, kill_grace, absl::Seconds(2),
          "Time an interrupted call gets to stop before its worker is "
          "SIGKILLed.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM, how long in-flight calls may take to finish.");
ABSL_FLAG(std::string, worker_binary, "",
          "Path of pyexec_worker; default: next to pyexecd, or "
          "../worker/pyexec_worker relative to it (the Bazel layout).");
ABSL_FLAG(std::string, launcher, "zygote",
          "How workers start: 'zygote' forks them from a pre-initialised "
          "template (about 1 ms each, shared preloads); 'spawn' starts a new "
          "pyexec_worker process each time.");
ABSL_FLAG(std::vector<std::string>, preload, {},
          "Modules imported once in the zygote, so that every worker has them "
          "(shared copy-on-write). A failing import stops pyexecd at start.");
ABSL_FLAG(std::string, preload_file, "",
          "Python file run once in the zygote's __main__ before any worker is "
          "forked; names it defines are visible to bound sessions. A failure "
          "stops pyexecd at start.");
ABSL_FLAG(uint64_t, worker_memory_limit_mb, 4096,
          "Address-space limit per worker in MiB (RLIMIT_AS); 0 = none.");
ABSL_FLAG(uint64_t, worker_max_open_files, 1024,
          "Open-file limit per worker (RLIMIT_NOFILE); 0 = inherited.");
ABSL_FLAG(std::string, worker_user, "",
          "User the workers run as when pyexecd runs as root; default "
          "pyexec-worker if that user exists, else nobody. \"root\" keeps "
          "root (not recommended). Ignored when pyexecd is not root.");
ABSL_FLAG(uint64_t, worker_max_processes, 512,
          "RLIMIT_NPROC of workers: processes and threads of the worker "
          "user, counted across all its workers; 0 = inherited.");
ABSL_FLAG(uint64_t, worker_cpu_seconds, 0,
          "RLIMIT_CPU of a worker: CPU seconds over its whole life (a "
          "session's), after which it is killed; 0 = none.");
ABSL_FLAG(uint64_t, worker_max_file_mb, 1024,
          "RLIMIT_FSIZE of workers in MiB: largest file user code may "
          "write; 0 = none.");
ABSL_FLAG(bool, worker_seccomp, true,
          "Install the workers' seccomp filter (refuses ptrace, mount, "
          "namespaces, kernel modules, bpf, ... with EPERM).");
ABSL_FLAG(std::string, worker_network, "host",
          "host: workers share pyexecd's network; none: each worker gets an "
          "empty network namespace (loopback only). pyexecd refuses to start "
          "if the kernel does not allow it.");
ABSL_FLAG(std::string, worker_home_root, "",
          "Directory under which each worker gets a private HOME/TMPDIR, "
          "removed when the worker ends; default a fresh "
          "$TMPDIR/pyexecd-XXXXXX, removed at exit.");
ABSL_FLAG(bool, worker_landlock, true,
          "Put each worker in a Landlock domain of its own (Linux >= 5.13): "
          "it reads only system and Python paths, writes only its private "
          "directory, and cannot reach other processes' /proc entries, "
          "signals or abstract sockets. Used where the kernel has it.");
ABSL_FLAG(std::vector<std::string>, worker_read_paths, {},
          "More paths sessions may read and execute under Landlock, e.g. a "
          "virtualenv or a data directory (comma-separated; each must "
          "exist).");
ABSL_FLAG(std::string, worker_uid_range, "",
          "FIRST-LAST: each worker runs as a uid of its own from this range "
          "(needs root or CAP_SETUID and CAP_SETGID), handed out again once "
          "its processes are gone. Empty: all workers run as --worker_user.");
ABSL_FLAG(uint64_t, worker_max_disk_mb, 0,
          "Disk a session's private directory may take; past it the session "
          "is ended (its call gets ABORTED saying why). 0 = no cap.");
ABSL_FLAG(std::vector<std::string>, worker_env, {},
          "NAME=VALUE pairs added to the workers' environment "
          "(comma-separated; values cannot hold commas).");
ABSL_FLAG(std::vector<std::string>, worker_env_passthrough, {},
          "Names of pyexecd's environment variables that workers see too "
          "(comma-separated). Workers otherwise get only PATH, LANG, the "
          "PYTHON* variables, HOME and TMPDIR.");
ABSL_FLAG(bool, allow_shared_worker_uid, false,
          "Start even when authentication is on and workers would share "
          "pyexecd's uid with no Landlock (ABI >= 6) to keep them from it; "
          "sessions could then read pyexecd's secrets and signal it.");
ABSL_FLAG(std::string, health_listen, "",
          "HOST:PORT of a plaintext port serving only grpc.health.v1, "
          "without client certificates (Kubernetes probes under mTLS). "
          "Empty: none.");
ABSL_FLAG(uint64_t, max_output_bytes, pyexec::kDefaultMaxOutputBytes,
          "Captured stdout and stderr per call, each; the rest is cut.");
ABSL_FLAG(int, max_message_bytes, pyexec::kDefaultMaxMessageBytes,
          "Largest gRPC request or response.");
ABSL_FLAG(int, max_value_depth, pyexec::kDefaultMaxValueDepth,
          "Deepest container nesting of values (at most 100).");
ABSL_FLAG(absl::Duration, max_timeout, absl::Hours(1),
          "Longest a call may run: longer client deadlines are cut to it.");
ABSL_FLAG(uint64_t, max_queued_bytes, 256 << 20,
          "Most request bytes waiting for workers; more answer "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint64_t, grpc_memory_quota_mb, 1024,
          "Memory gRPC may use for its buffers (a ResourceQuota); 0 = no "
          "quota.");
ABSL_FLAG(int, max_sessions_per_principal, 0,
          "Most sessions one principal may hold at once; past it, Bind "
          "answers RESOURCE_EXHAUSTED. 0 = no limit.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of this server; with --tls_key_file turns "
          "on TLS. Re-read every --tls_refresh_interval.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of this server.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: clients must present a certificate it verifies "
          "(mTLS); the certificate's SAN (else CN) is the principal.");
ABSL_FLAG(absl::Duration, tls_refresh_interval, absl::Seconds(60),
          "How often the TLS files are checked for rotation.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of `PRINCIPAL TOKEN` lines (# comments); clients send "
          "`authorization: Bearer TOKEN`. Re-read on change and on SIGHUP.");
ABSL_FLAG(std::string, peer_secret_file, "",
          "File holding the secret peer replicas send as "
          "x-pyexec-peer-secret to assert a caller's principal.");
ABSL_FLAG(std::vector<std::string>, peer_identities, {},
          "mTLS identities (SAN or CN) of peer replicas allowed to assert a "
          "caller's principal.");
ABSL_FLAG(bool, allow_unauthenticated, false,
          "Serve on a non-loopback address without authentication (only "
          "behind something else that restricts access).");
ABSL_FLAG(std::string, advertise_address, "",
          "HOST:PORT at which peers reach this replica; default: --listen "
          "unless it is a wildcard. In Kubernetes: $(POD_IP):50051.");
ABSL_FLAG(std::vector<std::string>, peers, {},
          "The replicas, this one included: comma-separated HOST:PORT or "
          "dns:///NAME:PORT (re-resolved periodically, e.g. a headless "
          "Service). Calls on a session another replica owns are forwarded "
          "there. Empty: run alone.");
ABSL_FLAG(absl::Duration, peers_refresh_interval, absl::Seconds(5),
          "How often dns:/// --peers entries are resolved again.");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT serving Prometheus metrics at GET /metrics; empty: "
          "none.");

namespace pyexec {
namespace {

std::string DefaultWorkerBinary() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "pyexec_worker";
  self[n] = '\0';
  std::string dir(self);
  dir.resize(dir.rfind('/'));
  for (const std::string& candidate :
       {dir + "/pyexec_worker", dir + "/../worker/pyexec_worker"}) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return dir + "/pyexec_worker";
}

// Default stack of the threads a session starts when RLIMIT_AS is set
// (which counts every thread's whole stack): 200 threads fit in 1 GiB.
constexpr uint64_t kLimitedThreadStackBytes = 2 << 20;

// An absolute, resolved path for `path`, or `path` itself if it does not
// resolve.
std::string Resolved(const std::string& path) {
  char resolved[PATH_MAX];
  return realpath(path.c_str(), resolved) != nullptr ? std::string(resolved) : path;
}

// Fills the worker confinement from the flags. Errors name the flag.
absl::Status ConfinementFromFlags(const ServerOptions& server, ConfinementOptions* c) {
  if (geteuid() == 0) {
    std::string user = absl::GetFlag(FLAGS_worker_user);
    if (user.empty()) user = getpwnam("pyexec-worker") != nullptr ? "pyexec-worker" : "nobody";
    const passwd* pw = getpwnam(user.c_str());
    if (pw == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--worker_user=", user, ": no such user"));
    }
    c->set_switch_user(true);
    c->set_uid(pw->pw_uid);
    c->set_gid(pw->pw_gid);
    if (pw->pw_uid == 0) LogWarning("--worker_user=root: workers run as root");
  } else if (!absl::GetFlag(FLAGS_worker_user).empty()) {
    LogWarning("--worker_user is ignored: pyexecd does not run as root");
  }
  c->set_max_processes(absl::GetFlag(FLAGS_worker_max_processes));
  c->set_cpu_seconds(absl::GetFlag(FLAGS_worker_cpu_seconds));
  uint64_t max_file_bytes = absl::GetFlag(FLAGS_worker_max_file_mb) << 20;
  if (uint64_t disk = absl::GetFlag(FLAGS_worker_max_disk_mb) << 20; disk > 0) {
    // No single file past the disk cap, whatever the periodic check sees.
    max_file_bytes = max_file_bytes == 0 ? disk : std::min(max_file_bytes, disk);
  }
  c->set_max_file_bytes(max_file_bytes);
  c->set_memory_limit_mb(absl::GetFlag(FLAGS_worker_memory_limit_mb));
  c->set_max_open_files(absl::GetFlag(FLAGS_worker_max_open_files));
  if (c->memory_limit_mb() > 0) c->set_thread_stack_bytes(kLimitedThreadStackBytes);
  c->set_seccomp(absl::GetFlag(FLAGS_worker_seccomp));
  internal::Confinement::Network network;
  if (!ParseWorkerNetwork(absl::GetFlag(FLAGS_worker_network), &network)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--worker_network=", absl::GetFlag(FLAGS_worker_network),
        ": must be host or none"));
  }
  c->set_network(network);
  c->set_landlock(absl::GetFlag(FLAGS_worker_landlock) && LandlockAbi() >= 1);
  // Paths no rule may open up to sessions: pyexecd's credentials (the
  // private-directory root is added once it exists).
  for (const std::string* file :
       {&server.auth.tokens_file, &server.auth.peer_secret_file, &server.tls.cert_file,
        &server.tls.key_file, &server.tls.client_ca_file}) {
    if (!file->empty()) c->add_forbidden_paths(Resolved(*file));
  }
  std::vector<std::string> read = absl::GetFlag(FLAGS_worker_read_paths);
  if (!server.zygote.preload_file.empty()) read.push_back(server.zygote.preload_file);
  for (const std::string& path : read) {
    if (path.empty()) continue;
    if (access(path.c_str(), F_OK) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--worker_read_paths: ", path, " does not exist"));
    }
    c->add_read_paths(Resolved(path));
  }
  return absl::OkStatus();
}

// Whether a rule on `path` would reach `forbidden` (the same, above or
// below it).
bool Overlaps(const std::string& path, const std::string& forbidden) {
  auto beneath = [](const std::string& inner, const std::string& outer) {
    return outer == "/" || inner == outer ||
           (absl::StartsWith(inner, outer) && inner[outer.size()] == '/');
  };
  return beneath(path, forbidden) || beneath(forbidden, path);
}

ServerOptions OptionsFromFlags() {
  ServerOptions o;
  o.listen = BracketHostPort(absl::GetFlag(FLAGS_listen));
  o.pool.workers = std::max(1, absl::GetFlag(FLAGS_workers));
  o.pool.max_workers = std::max(0, absl::GetFlag(FLAGS_max_workers));
  o.pool.max_pending = std::max(0, absl::GetFlag(FLAGS_max_pending));
  o.pool.kill_grace = absl::GetFlag(FLAGS_kill_grace);
  o.pool.io_spin = std::clamp(absl::GetFlag(FLAGS_io_spin), absl::ZeroDuration(),
                              absl::Milliseconds(1));
  o.core.session_idle_timeout = absl::GetFlag(FLAGS_session_idle_timeout);
  o.core.lease_grace = std::max(absl::GetFlag(FLAGS_lease_grace), absl::ZeroDuration());
  o.migrate_on_drain = absl::GetFlag(FLAGS_migrate_on_drain);
  o.core.max_session_idle_timeout =
      std::max(absl::GetFlag(FLAGS_max_session_idle_timeout),
               o.core.session_idle_timeout);
  o.core.max_refs_per_session = absl::GetFlag(FLAGS_max_refs_per_session);
  o.default_timeout = absl::GetFlag(FLAGS_default_timeout);
  o.max_timeout = std::max(absl::GetFlag(FLAGS_max_timeout), absl::Milliseconds(1));
  o.pool.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  o.grpc_memory_quota_bytes = absl::GetFlag(FLAGS_grpc_memory_quota_mb) << 20;
  o.core.max_sessions_per_principal =
      std::max(0, absl::GetFlag(FLAGS_max_sessions_per_principal));
  o.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.tls.refresh_interval = absl::GetFlag(FLAGS_tls_refresh_interval);
  o.auth.tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  o.auth.peer_secret_file = absl::GetFlag(FLAGS_peer_secret_file);
  o.auth.peer_identities = absl::GetFlag(FLAGS_peer_identities);
  o.allow_unauthenticated = absl::GetFlag(FLAGS_allow_unauthenticated);
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.core.max_snapshot_bytes =
      std::min<uint64_t>(absl::GetFlag(FLAGS_max_snapshot_bytes),
                         static_cast<uint64_t>(std::max(o.max_message_bytes, 128 << 10)) -
                             (64 << 10));
  o.worker.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  if (o.worker.worker_binary.empty()) o.worker.worker_binary = DefaultWorkerBinary();
  internal::WorkerSettings& settings = o.worker.settings;
  settings.set_max_output_bytes(absl::GetFlag(FLAGS_max_output_bytes));
  settings.set_max_value_depth(
      std::clamp(absl::GetFlag(FLAGS_max_value_depth), 1, kMaxValueDepthCeiling));
  // A request frame carries one gRPC message plus a little framing.
  settings.set_max_frame_bytes(static_cast<uint64_t>(o.max_message_bytes) +
                               kFrameOverheadBytes);
  // A response carries the result plus the captured output, all of which
  // must fit one gRPC message.
  settings.set_max_response_bytes(static_cast<uint64_t>(o.max_message_bytes));
  o.pool.max_frame_bytes = settings.max_response_bytes() + kFrameOverheadBytes;
  o.core.max_value_depth = settings.max_value_depth();
  o.worker.max_disk_bytes = absl::GetFlag(FLAGS_worker_max_disk_mb) << 20;
  o.launcher = absl::GetFlag(FLAGS_launcher) == "spawn" ? LauncherKind::kSpawn
                                                        : LauncherKind::kZygote;
  o.zygote.preload = absl::GetFlag(FLAGS_preload);
  o.zygote.preload_file = absl::GetFlag(FLAGS_preload_file);
  o.advertise_address = BracketHostPort(absl::GetFlag(FLAGS_advertise_address));
  o.health_listen = BracketHostPort(absl::GetFlag(FLAGS_health_listen));
  for (const std::string& peer : absl::GetFlag(FLAGS_peers)) {
    if (!peer.empty()) o.peers.push_back(peer);
  }
  o.peers_refresh_interval =
      std::max(absl::GetFlag(FLAGS_peers_refresh_interval), absl::Milliseconds(100));
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  return o;
}

// Fills the workers' confinement and environment, creates the private
// directory root and proves, in a forked child, that a worker can be
// confined as configured (user, rlimits, a private directory under the
// root, Landlock, seccomp, network). With --worker_network=none where no
// network namespace can be made (a container's seccomp profile), workers
// get no inet sockets instead. Says which layers are active, and refuses
// to start when they cannot keep sessions from pyexecd. Runs before any
// thread exists. Returns the root if pyexecd created it (to remove at exit).
absl::StatusOr<std::string> PrepareWorkers(const ServerOptions& server,
                                           WorkerProcessOptions* worker) {
  ConfinementOptions& c = *worker->settings.mutable_confinement();
  if (absl::Status s = ConfinementFromFlags(server, &c); !s.ok()) return s;
  if (const std::string range = absl::GetFlag(FLAGS_worker_uid_range); !range.empty()) {
    absl::StatusOr<std::pair<uint32_t, uint32_t>> uids = UidPool::ParseRange(range);
    if (!uids.ok()) return uids.status();
    if (geteuid() != 0) {
      return absl::InvalidArgumentError(
          "--worker_uid_range: pyexecd must run as root to give workers uids");
    }
    worker->uid_first = uids->first;
    worker->uid_count = uids->second - uids->first + 1;
    c.set_ptys(true);  // a pseudo-terminal is then reachable by its owner only
  }
  absl::StatusOr<std::vector<std::string>> environment =
      BuildWorkerEnvironment(CurrentEnvironment(), absl::GetFlag(FLAGS_worker_env_passthrough),
                             absl::GetFlag(FLAGS_worker_env));
  if (!environment.ok()) return environment.status();
  worker->environment = *std::move(environment);

  const std::string given = absl::GetFlag(FLAGS_worker_home_root);
  absl::StatusOr<std::string> root = CreatePrivateDirRoot(given);
  if (!root.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--worker_home_root: ", root.status().message()));
  }
  worker->private_dir_root = *root;
  c.add_forbidden_paths(Resolved(*root));
  const std::string created = given.empty() ? *root : "";
  auto fail = [&created](absl::Status status) {
    if (!created.empty()) RemoveTree(created).IgnoreError();
    return status;
  };
  for (const std::string& path : c.read_paths()) {
    for (const std::string& forbidden : c.forbidden_paths()) {
      if (Overlaps(path, forbidden)) {
        return fail(absl::InvalidArgumentError(absl::StrCat(
            "--worker_read_paths: ", path, " would let sessions reach ", forbidden)));
      }
    }
  }

  IsolationFacts facts;
  // The per-session process cap: a cgroup per worker where one is
  // delegated, else RLIMIT_NPROC (per uid: shared by every worker, and by
  // every process of that uid on the node).
  if (c.max_processes() > 0) {
    absl::StatusOr<std::unique_ptr<WorkerCgroups>> cgroups =
        WorkerCgroups::Create(c.max_processes());
    if (cgroups.ok()) {
      facts.process_cap = absl::StrCat("processes: ", c.max_processes(),
                                       " per session (", (*cgroups)->description(), ")");
      worker->cgroups = std::shared_ptr<WorkerCgroups>(*std::move(cgroups));
      c.set_max_processes(0);
    } else {
      facts.process_cap = absl::StrCat(
          "processes: RLIMIT_NPROC ", c.max_processes(),
          worker->uid_count > 0 ? " per worker uid" : " shared by every process of the uid",
          " (no cgroup per session: ", cgroups.status().message(), ")");
    }
  }
  facts.pyexecd_uid = geteuid();
  facts.uid_per_worker = worker->uid_count > 0;
  facts.landlock_abi = LandlockAbi();
  facts.authentication = !server.auth.tokens_file.empty() || server.tls.mtls();
  facts.allow_shared_worker_uid = absl::GetFlag(FLAGS_allow_shared_worker_uid);
  if (absl::GetFlag(FLAGS_worker_landlock) && facts.landlock_abi == 0) {
    LogWarning("this kernel has no Landlock: workers get no Landlock domain");
  }

  // The probe runs as the first worker would: the first uid of the range.
  ConfinementOptions probe = c;
  if (worker->uid_count > 0) {
    probe.set_switch_user(true);
    probe.set_uid(worker->uid_first);
    probe.set_gid(worker->uid_first);
  }
  probe.add_protected_pids(getpid());
  auto check = [&root](ConfinementOptions& options) {
    absl::StatusOr<std::string> dir =
        CreatePrivateDir(*root, options.switch_user() ? options.uid() : -1,
                         options.switch_user() ? options.gid() : -1);
    if (!dir.ok()) return dir.status();
    options.set_private_dir(*dir);
    absl::Status checked = CheckConfinement(options);
    RemoveTree(*dir).IgnoreError();
    return checked;
  };
  absl::Status checked = check(probe);
  if (!checked.ok() && c.network() == internal::Confinement::NONE) {
    probe.set_network(internal::Confinement::NO_INET);
    if (check(probe).ok()) {
      LogWarning(absl::StrCat("--worker_network=none: no network namespace here (",
                              checked.message(),
                              "); workers get no inet sockets instead (seccomp)"));
      c.set_network(internal::Confinement::NO_INET);
      checked = absl::OkStatus();
    }
  }
  if (!checked.ok()) return fail(checked);
  facts.confinement = c;
  LogInfo(DescribeIsolation(facts));
  if (absl::Status s = CheckIsolation(facts); !s.ok()) return fail(s);
  return created;
}

int Run() {
  ServerOptions options = OptionsFromFlags();
  // One descriptor per session: take the whole hard limit, and say when even
  // that cannot hold --max_workers.
  const uint64_t file_limit = RaiseOpenFileLimit();
  if (std::string warning =
          FileLimitWarning(file_limit, options.pool.max_workers, options.pool.workers);
      !warning.empty()) {
    LogWarning(warning);
  }
  // Orphans of dead workers are looked for only after a child exits.
  WatchChildExits();
  absl::StatusOr<std::string> created_root = PrepareWorkers(options, &options.worker);
  if (!created_root.ok()) {
    LogError(absl::StrCat("cannot start: ", created_root.status().message()));
    return 1;
  }

  // Block the stop signals and SIGHUP in every thread (threads inherit the
  // mask) and take them synchronously below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto remove_root = [&created_root] {
    if (!created_root->empty()) RemoveTree(*created_root).IgnoreError();
  };
  PyExecServer server(std::move(options));
  absl::StatusOr<std::string> address = server.Start();
  if (!address.ok()) {
    LogError(absl::StrCat("cannot start: ", address.status().message()));
    server.Shutdown();
    remove_root();
    return 1;
  }
  std::printf("listening on %s\n", address->c_str());
  std::fflush(stdout);

  int signal_number = 0;
  // SIGHUP re-reads the credential files; SIGTERM and SIGINT stop.
  while (sigwait(&stop_signals, &signal_number) == 0 && signal_number == SIGHUP) {
    LogInfo("received SIGHUP: reloading credentials");
    server.ReloadCredentials();
  }
  LogInfo(absl::StrCat("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"));
  // A second signal during the drain stops at once.
  std::thread second([&stop_signals, &remove_root] {
    int again = 0;
    do {
      sigwait(&stop_signals, &again);
    } while (again == SIGHUP);
    LogWarning("second stop signal: stopping now");
    // Best effort: workers still running may write until they die with us.
    remove_root();
    // The zygote's guard (forked workers) or each worker's watchdog thread
    // (spawned ones) takes the workers and their process groups down.
    _exit(0);
  });
  second.detach();
  server.Drain();
  server.Shutdown();
  remove_root();
  return 0;
}

}  // namespace
}  // namespace pyexec

int main(int argc, char** argv) {
  // pyexecd's /proc entries (environment, working directory, memory) stay
  // closed to processes of its uid, which its workers may be.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: every lock, ours and gRPC's (gpr_mu is an absl::Mutex),
  // then goes through one global graph under one global lock. Tests keep it;
  // the server does not pay it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  pyexec::SetLogProgramName("pyexecd");
  absl::SetProgramUsageMessage(
      "pyexecd: runs Python for programs written in any language, over gRPC.\n"
      "  pyexecd --listen=127.0.0.1:50051 --workers=4 --max_workers=16");
  absl::ParseCommandLine(argc, argv);
  const std::string launcher = absl::GetFlag(FLAGS_launcher);
  if (launcher != "zygote" && launcher != "spawn") {
    pyexec::LogError("--launcher must be 'zygote' or 'spawn'");
    return 2;
  }
  if (launcher == "spawn" && (!absl::GetFlag(FLAGS_preload).empty() ||
                              !absl::GetFlag(FLAGS_preload_file).empty())) {
    pyexec::LogError("--preload and --preload_file need --launcher=zygote");
    return 2;
  }
  return pyexec::Run();
}
