#ifndef PYEXEC_SERVER_METRICS_H_
#define PYEXEC_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"

namespace pyexec {

// The RPCs that metrics are kept for (a small fixed label set).
enum class Rpc {
  kBind, kUnbind, kEval, kExec, kCall, kGetStats,
  kExecStream, kCallStream, kRelease, kInterrupt, kAttach, kRun, kSnapshot,
};
inline constexpr int kNumRpcs = 13;

// How a session fared when its replica drained with peers (server/migrator.h).
enum class MigrationOutcome {
  kMigrated,    // restored on a peer, its token keeps working
  kFailed,      // the snapshot or the restore failed: ended as before
  kLeftBehind,  // still busy when the drain time ran out: ended as before
};
inline constexpr int kNumMigrationOutcomes = 3;
const char* RpcName(Rpc rpc);

// How a call that this replica forwarded to the session's owner ended.
enum class ForwardOutcome {
  kAnswered,        // the owner answered (any status, passed on unchanged)
  kUnreachable,     // the owner could not be reached: UNAVAILABLE
  kUnknownReplica,  // the token names no current peer: NOT_FOUND
  kDeadlineExceeded,
  kCancelled,
};
inline constexpr int kNumForwardOutcomes = 5;
const char* ForwardOutcomeName(ForwardOutcome outcome);

// Figures read at scrape time (gauges, and counters kept elsewhere).
struct MetricsSnapshot {
  int idle_workers = 0;      // ready, unbound, not running a call
  int busy_workers = 0;      // running a call (bound ones included)
  int bound_workers = 0;     // checked out by sessions
  int starting_workers = 0;  // spawned, not ready yet
  int max_workers = 0;
  int pending_calls = 0;     // calls and binds waiting for a worker
  int sessions = 0;
  bool draining = false;
  int peers = 0;             // replicas currently discovered (self included)
  uint64_t workers_spawned = 0;
  // Unexpected worker deaths by reason (labels from a small fixed set).
  std::map<std::string, uint64_t> worker_deaths;
};

// pyexecd's Prometheus metrics, rendered in the text exposition format
// (version 0.0.4). Counters and histograms are lock-free atomics so that
// recording on gRPC threads never waits; gauges come from `snapshot` at
// scrape time. Thread-safe.
class Metrics {
 public:
  // Latency histogram bucket upper bounds, in seconds.
  static constexpr std::array<double, 15> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,   1,      2.5,   5,     10,   30};

  explicit Metrics(std::function<MetricsSnapshot()> snapshot)
      : snapshot_(std::move(snapshot)) {}

  // One RPC answered by this replica with `code`, after `latency`.
  void RecordCall(Rpc rpc, grpc::StatusCode code, absl::Duration latency);
  // One call on a session owned by another replica.
  void RecordForward(Rpc rpc, ForwardOutcome outcome);
  // One session's move at drain: its outcome, the blob's size and the time
  // from snapshot to restored.
  void RecordMigration(MigrationOutcome outcome, uint64_t bytes, absl::Duration took);

  // The whole exposition, for GET /metrics.
  std::string Render() const;

 private:
  static constexpr int kNumCodes = 17;  // grpc::StatusCode 0..16
  struct Histogram {
    std::array<std::atomic<uint64_t>, kBuckets.size()> buckets{};  // not cumulative
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_nanos{0};
  };

  const std::function<MetricsSnapshot()> snapshot_;
  static void Observe(Histogram* h, absl::Duration value);
  // The _bucket, _sum and _count series of `h`; `labels` is "" or
  // `key="value",` pairs each ending in a comma.
  static void RenderHistogram(std::string* out, const std::string& name,
                              const std::string& labels, const Histogram& h);

  std::array<std::array<std::atomic<uint64_t>, kNumCodes>, kNumRpcs> calls_{};
  std::array<Histogram, kNumRpcs> latency_{};
  std::array<std::atomic<uint64_t>, kNumMigrationOutcomes> migrations_{};
  std::atomic<uint64_t> migrated_bytes_{0};
  Histogram migration_seconds_;
  std::array<std::array<std::atomic<uint64_t>, kNumForwardOutcomes>, kNumRpcs>
      forwarded_{};
};

// The canonical name of a gRPC status code ("OK", "NOT_FOUND", ...).
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_METRICS_H_
