// Where one Eval's time goes: the server's per-call trace (x-pyexec-trace)
// collected over many calls at one client, each stage's median, and the
// time the client saw outside the handler (transport both ways).

#ifndef PYEXEC_BENCH_STAGE_TRACE_H_
#define PYEXEC_BENCH_STAGE_TRACE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"

namespace pyexec {
namespace bench {

// One traced call: each stage's time after the handler was entered, in the
// order of the trailing metadata; nullopt-like -1 for a stage not reached.
using StageTimes = std::vector<std::pair<std::string, int64_t>>;

// Parses "entered=0 pool_sent=9100 ... finish=61000" ("-" for a stage not
// reached). INVALID_ARGUMENT for anything else.
absl::StatusOr<StageTimes> ParseTrace(absl::string_view text);

// Each stage's median duration (from the stage before it), plus the client's
// median total and the part of it outside the handler.
struct StageBreakdown {
  std::vector<std::pair<std::string, absl::Duration>> stages;
  absl::Duration client_total;
  absl::Duration outside_handler;
  int calls = 0;
};

// Binds a session on `channel`, runs `calls` traced Eval("1+1") one after the
// other, unbinds. The stages' names are "from -> to".
absl::StatusOr<StageBreakdown> TraceEvalStages(std::shared_ptr<grpc::Channel> channel,
                                               int calls, absl::Duration call_timeout);

// The breakdown as a table, each stage also as a share of echo's p50 (the
// floor a call through gRPC cannot go below).
std::string FormatStageTable(const StageBreakdown& breakdown, absl::Duration echo_p50);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_STAGE_TRACE_H_
