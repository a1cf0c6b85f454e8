// The cost of the scale-out hop: Eval("1+1") on sessions bound on one
// replica, called on that replica directly, through a second replica that
// forwards each call to it, and by a client that is given the second replica
// but routes each session's calls to its owner (route_to_owner), in the same
// run.

#ifndef PYEXEC_BENCH_HOP_H_
#define PYEXEC_BENCH_HOP_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/load.h"

namespace pyexec {
namespace bench {

// Settings of a hop run.
struct HopOptions {
  // Warmup and measured time of each of the six phases.
  PhaseOptions phase;
  // Concurrent clients (each its own thread, channel and session) for
  // throughput.
  int concurrency = 8;
  // Deadline of every measured call.
  absl::Duration call_timeout = absl::Seconds(10);
  // How long to wait for each connection.
  absl::Duration connect_timeout = absl::Seconds(10);
};

// Figures of a hop run: "direct" calls go to the owner, "forwarded" calls
// go to the other replica, which forwards them to the owner, and "routed"
// calls are made by a client whose address is the other replica but which
// sends them to the owner it learnt from the first forwarded answer.
struct HopReport {
  PhaseResult direct_latency;
  PhaseResult forwarded_latency;
  PhaseResult routed_latency;
  PhaseResult direct_throughput;
  PhaseResult forwarded_throughput;
  PhaseResult routed_throughput;
};

// Binds sessions on `owner_address` and runs the six phases: direct,
// forwarded and routed with one client, then with `concurrency`.
// UNAVAILABLE if a replica cannot be reached; a Bind failure is returned as
// is.
absl::StatusOr<HopReport> RunHop(const std::string& owner_address,
                                 const std::string& other_address,
                                 const HopOptions& options);

// The results table: p50/p99 and throughput, forwarded and routed against
// direct.
std::string FormatHopTable(const HopReport& report, const HopOptions& options);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_HOP_H_
