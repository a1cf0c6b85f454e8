#include "server/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pyexec {
namespace {

void Header(std::string* out, const char* name, const char* type,
            const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                  type, "\n");
}

// Prometheus floats: integers print without an exponent, others in full.
std::string Number(double v) { return absl::StrFormat("%.15g", v); }

}  // namespace

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kBind: return "Bind";
    case Rpc::kUnbind: return "Unbind";
    case Rpc::kEval: return "Eval";
    case Rpc::kExec: return "Exec";
    case Rpc::kCall: return "Call";
    case Rpc::kGetStats: return "GetStats";
    case Rpc::kExecStream: return "ExecStream";
    case Rpc::kCallStream: return "CallStream";
    case Rpc::kRelease: return "Release";
    case Rpc::kInterrupt: return "Interrupt";
    case Rpc::kAttach: return "Attach";
    case Rpc::kRun: return "Run";
    case Rpc::kSnapshot: return "Snapshot";
  }
  return "unknown";
}

const char* ForwardOutcomeName(ForwardOutcome outcome) {
  switch (outcome) {
    case ForwardOutcome::kAnswered: return "answered";
    case ForwardOutcome::kUnreachable: return "unreachable";
    case ForwardOutcome::kUnknownReplica: return "unknown_replica";
    case ForwardOutcome::kDeadlineExceeded: return "deadline_exceeded";
    case ForwardOutcome::kCancelled: return "cancelled";
  }
  return "unknown";
}

const char* StatusCodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",
      "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED",     "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

void Metrics::RecordCall(Rpc rpc, grpc::StatusCode code,
                         absl::Duration latency) {
  const int r = static_cast<int>(rpc);
  int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) c = grpc::StatusCode::UNKNOWN;
  calls_[r][c].fetch_add(1, std::memory_order_relaxed);
  Observe(&latency_[r], latency);
}

void Metrics::Observe(Histogram* h, absl::Duration value) {
  const double seconds = absl::ToDoubleSeconds(value);
  for (size_t b = 0; b < kBuckets.size(); ++b) {
    if (seconds <= kBuckets[b]) {
      h->buckets[b].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  h->sum_nanos.fetch_add(
      static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(value))),
      std::memory_order_relaxed);
  h->count.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::RenderHistogram(std::string* out, const std::string& name,
                              const std::string& labels, const Histogram& h) {
  // Read the count first: buckets are bumped before it, so the +Inf bucket
  // (== count) never falls below a finite bucket.
  const uint64_t count = h.count.load(std::memory_order_relaxed);
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kBuckets.size(); ++b) {
    cumulative += h.buckets[b].load(std::memory_order_relaxed);
    absl::StrAppend(out, name, "_bucket{", labels, "le=\"", Number(kBuckets[b]), "\"} ",
                    std::min(cumulative, count), "\n");
  }
  absl::StrAppend(out, name, "_bucket{", labels, "le=\"+Inf\"} ", count, "\n");
  std::string plain = labels;
  if (!plain.empty()) plain.pop_back();  // the trailing comma
  const std::string braces = plain.empty() ? "" : absl::StrCat("{", plain, "}");
  absl::StrAppend(out, name, "_sum", braces, " ",
                  Number(h.sum_nanos.load(std::memory_order_relaxed) / 1e9), "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count, "\n");
}

void Metrics::RecordForward(Rpc rpc, ForwardOutcome outcome) {
  forwarded_[static_cast<int>(rpc)][static_cast<int>(outcome)].fetch_add(
      1, std::memory_order_relaxed);
}

void Metrics::RecordMigration(MigrationOutcome outcome, uint64_t bytes, absl::Duration took) {
  migrations_[static_cast<int>(outcome)].fetch_add(1, std::memory_order_relaxed);
  if (outcome != MigrationOutcome::kMigrated) return;
  migrated_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  Observe(&migration_seconds_, took);
}

std::string Metrics::Render() const {
  const MetricsSnapshot s = snapshot_();
  std::string out;
  out.reserve(8192);

  Header(&out, "pyexec_rpcs_total", "counter",
         "PyExec RPCs answered by this replica, by RPC and status code.");
  for (int r = 0; r < kNumRpcs; ++r) {
    for (int c = 0; c < kNumCodes; ++c) {
      uint64_t n = calls_[r][c].load(std::memory_order_relaxed);
      // OK is always shown so that every RPC has a series from the start.
      if (n == 0 && c != 0) continue;
      absl::StrAppend(&out, "pyexec_rpcs_total{rpc=\"", RpcName(Rpc(r)),
                      "\",code=\"", StatusCodeName(grpc::StatusCode(c)),
                      "\"} ", n, "\n");
    }
  }

  Header(&out, "pyexec_rpc_duration_seconds", "histogram",
         "Time from receiving a PyExec RPC to answering it.");
  for (int r = 0; r < kNumRpcs; ++r) {
    RenderHistogram(&out, "pyexec_rpc_duration_seconds",
                    absl::StrCat("rpc=\"", RpcName(Rpc(r)), "\","), latency_[r]);
  }

  Header(&out, "pyexec_forwarded_calls_total", "counter",
         "Calls on sessions owned by another replica, by RPC and outcome.");
  for (int r = 0; r < kNumRpcs; ++r) {
    const Rpc rpc = Rpc(r);
    if (rpc == Rpc::kBind || rpc == Rpc::kGetStats) continue;  // never forwarded
    for (int o = 0; o < kNumForwardOutcomes; ++o) {
      absl::StrAppend(&out, "pyexec_forwarded_calls_total{rpc=\"", RpcName(rpc),
                      "\",outcome=\"", ForwardOutcomeName(ForwardOutcome(o)),
                      "\"} ", forwarded_[r][o].load(std::memory_order_relaxed),
                      "\n");
    }
  }

  Header(&out, "pyexec_session_migrations_total", "counter",
         "Sessions this replica moved to a peer when it drained, by outcome.");
  static constexpr const char* kOutcomes[] = {"migrated", "failed", "left_behind"};
  for (int o = 0; o < kNumMigrationOutcomes; ++o) {
    absl::StrAppend(&out, "pyexec_session_migrations_total{outcome=\"", kOutcomes[o], "\"} ",
                    migrations_[o].load(std::memory_order_relaxed), "\n");
  }
  Header(&out, "pyexec_session_migration_bytes_total", "counter",
         "Snapshot bytes of the sessions this replica moved.");
  absl::StrAppend(&out, "pyexec_session_migration_bytes_total ",
                  migrated_bytes_.load(std::memory_order_relaxed), "\n");
  Header(&out, "pyexec_session_migration_seconds", "histogram",
         "Time to move one session: snapshot, restore on the peer.");
  RenderHistogram(&out, "pyexec_session_migration_seconds", "", migration_seconds_);

  Header(&out, "pyexec_workers", "gauge",
         "Worker processes by state. busy counts bound workers running a "
         "call too.");
  absl::StrAppend(&out, "pyexec_workers{state=\"idle\"} ", s.idle_workers, "\n",
                  "pyexec_workers{state=\"busy\"} ", s.busy_workers, "\n",
                  "pyexec_workers{state=\"bound\"} ", s.bound_workers, "\n",
                  "pyexec_workers{state=\"starting\"} ", s.starting_workers,
                  "\n");
  Header(&out, "pyexec_max_workers", "gauge",
         "Most workers that sessions may hold at once (--max_workers).");
  absl::StrAppend(&out, "pyexec_max_workers ", s.max_workers, "\n");
  Header(&out, "pyexec_worker_spawns_total", "counter",
         "Worker processes started.");
  absl::StrAppend(&out, "pyexec_worker_spawns_total ", s.workers_spawned, "\n");
  Header(&out, "pyexec_worker_deaths_total", "counter",
         "Worker processes that died without being asked to, by reason.");
  for (const auto& [reason, n] : s.worker_deaths) {
    absl::StrAppend(&out, "pyexec_worker_deaths_total{reason=\"", reason,
                    "\"} ", n, "\n");
  }
  Header(&out, "pyexec_sessions", "gauge", "Bound sessions on this replica.");
  absl::StrAppend(&out, "pyexec_sessions ", s.sessions, "\n");
  Header(&out, "pyexec_queued_calls", "gauge",
         "Calls and binds waiting for a worker.");
  absl::StrAppend(&out, "pyexec_queued_calls ", s.pending_calls, "\n");
  Header(&out, "pyexec_draining", "gauge",
         "1 once SIGTERM started the drain, else 0.");
  absl::StrAppend(&out, "pyexec_draining ", s.draining ? 1 : 0, "\n");
  Header(&out, "pyexec_peers", "gauge",
         "Replicas currently discovered through --peers (this one included); "
         "0 without --peers.");
  absl::StrAppend(&out, "pyexec_peers ", s.peers, "\n");
  return out;
}

}  // namespace pyexec
