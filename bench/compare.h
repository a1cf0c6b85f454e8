// The pyexec-vs-echo comparison: Eval("1+1") on bound sessions against a
// bare gRPC echo, 1 client for latency and N clients for throughput; and
// against the same echo relayed through a helper process (the floor of any
// design that runs calls in another process).

#ifndef PYEXEC_BENCH_COMPARE_H_
#define PYEXEC_BENCH_COMPARE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/load.h"
#include "bench/stage_trace.h"
#include "clients/cpp/client.h"
#include "grpcpp/channel.h"

namespace pyexec {
namespace bench {

// Settings of a comparison run.
struct CompareOptions {
  // Warmup and measured time of each phase: 1 client calling echo and Eval
  // in turn, then N clients on echo, then N clients on Eval.
  PhaseOptions phase;
  // Concurrent clients (each its own thread and session) for throughput.
  int concurrency = 8;
  // true: all clients share one channel (one HTTP/2 connection); false:
  // each client gets its own channel and connection.
  bool shared_channel = false;
  // Deadline of every measured call.
  absl::Duration call_timeout = absl::Seconds(10);
  // Echo payload size in bytes, about the size of an Eval request.
  int echo_payload_bytes = 48;
  // Targets (issue 18): Eval p50 <= latency_target x echo p50, at 1
  // client.
  double latency_target = 1.35;
  // Eval throughput >= throughput_target x echo throughput, at N clients.
  double throughput_target = 0.85;
  // The servers' pids, to account their CPU time and context switches per
  // call in the 1-client phases (pyexecd with its workers); 0 skips it.
  int pyexec_pid = 0;
  int echo_pid = 0;
  // An echo server with relay helpers (echo_server_main --relay_helpers):
  // its Relay calls take part in every phase, as the floor of a call that
  // runs in another process. Empty: none.
  std::string relay_address;
  int relay_pid = 0;
  // Traced Evals after the phases (0: no stage breakdown).
  int traced_calls = 2000;
};

// What the server side spent per call in a measured phase.
struct ServerCost {
  absl::Duration cpu;
  double context_switches = 0;
};

// Figures of a comparison run.
struct CompareReport {
  PhaseResult echo_latency;
  PhaseResult eval_latency;
  PhaseResult echo_throughput;
  PhaseResult eval_throughput;
  // Per call in the 1-client phases; zero when the pids are not known.
  ServerCost echo_cost;
  ServerCost eval_cost;
  // The same by thread (FormatThreadCosts), empty when the pids are not
  // known.
  std::string echo_threads;
  std::string eval_threads;
  // Where an Eval's time goes (the server's per-call trace).
  StageBreakdown stages;
  // The relay floor, when options.relay_address is set.
  PhaseResult relay_latency;
  PhaseResult relay_throughput;
  ServerCost relay_cost;
  std::string relay_threads;
};

// Eval("1+1") on `session`, an error unless it returns 2: the call every
// mode measures.
CallFn EvalCall(const Client& client, const std::string& session, absl::Duration timeout);

// Creates an insecure channel to `address`. With `own_connection` the
// channel gets a private subchannel pool, so it opens its own TCP connection
// instead of sharing one with other channels to the same address.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           bool own_connection);

// Runs the phases against a pyexec server and an echo server. Sessions are
// bound before and unbound after the phases that call Eval. UNAVAILABLE if a
// server cannot be reached; a Bind failure is returned as is.
absl::StatusOr<CompareReport> RunCompare(const std::string& pyexec_address,
                                         const std::string& echo_address,
                                         const CompareOptions& options);

// The results table with ratios and PASS/MISS against the targets.
std::string FormatCompareTable(const CompareReport& report,
                               const CompareOptions& options);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_COMPARE_H_
