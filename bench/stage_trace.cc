#include "bench/stage_trace.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace bench {
namespace {

absl::Duration Median(std::vector<absl::Duration> values) {
  if (values.empty()) return absl::ZeroDuration();
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

}  // namespace

absl::StatusOr<StageTimes> ParseTrace(absl::string_view text) {
  StageTimes times;
  for (absl::string_view field : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
    int64_t ns = -1;
    if (kv.first.empty() || (kv.second != "-" && !absl::SimpleAtoi(kv.second, &ns))) {
      return absl::InvalidArgumentError(absl::StrCat("not a trace field: ", field));
    }
    times.emplace_back(std::string(kv.first), ns);
  }
  if (times.empty() || times.front().first != "entered") {
    return absl::InvalidArgumentError(absl::StrCat("not a trace: ", text));
  }
  return times;
}

absl::StatusOr<StageBreakdown> TraceEvalStages(std::shared_ptr<grpc::Channel> channel,
                                               int calls, absl::Duration call_timeout) {
  auto stub = v1::PyExec::NewStub(channel);
  auto deadline = [call_timeout] {
    return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(call_timeout);
  };
  std::string session;
  {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    v1::BindResponse bound;
    grpc::Status s = stub->Bind(&context, v1::BindRequest(), &bound);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("Bind: ", s.error_message()));
    session = bound.session();
  }
  std::vector<std::string> names;
  std::vector<std::vector<absl::Duration>> durations;
  std::vector<absl::Duration> totals, outside;
  absl::Status failed;
  for (int i = 0; i < calls && failed.ok(); ++i) {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    context.AddMetadata("x-pyexec-trace", "1");
    v1::EvalRequest request;
    request.set_session(session);
    request.set_code("1+1");
    v1::EvalResponse response;
    const absl::Time start = absl::Now();
    grpc::Status s = stub->Eval(&context, request, &response);
    const absl::Duration total = absl::Now() - start;
    if (!s.ok()) {
      failed = absl::UnavailableError(absl::StrCat("Eval: ", s.error_message()));
      break;
    }
    auto it = context.GetServerTrailingMetadata().find("x-pyexec-trace");
    if (it == context.GetServerTrailingMetadata().end()) {
      failed = absl::FailedPreconditionError("the server sent no trace (an older pyexecd?)");
      break;
    }
    absl::StatusOr<StageTimes> times =
        ParseTrace(absl::string_view(it->second.data(), it->second.size()));
    if (!times.ok()) {
      failed = times.status();
      break;
    }
    if (names.empty()) {
      for (size_t k = 1; k < times->size(); ++k) {
        names.push_back(absl::StrCat((*times)[k - 1].first, " -> ", (*times)[k].first));
      }
      durations.resize(names.size());
    }
    if (times->size() != names.size() + 1) continue;
    for (size_t k = 1; k < times->size(); ++k) {
      if ((*times)[k].second < 0 || (*times)[k - 1].second < 0) continue;
      durations[k - 1].push_back(absl::Nanoseconds((*times)[k].second - (*times)[k - 1].second));
    }
    totals.push_back(total);
    if (times->back().second >= 0) outside.push_back(total - absl::Nanoseconds(times->back().second));
  }
  {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    v1::UnbindRequest unbind;
    unbind.set_session(session);
    v1::UnbindResponse ignored;
    stub->Unbind(&context, unbind, &ignored);
  }
  if (!failed.ok()) return failed;
  StageBreakdown breakdown;
  for (size_t k = 0; k < names.size(); ++k) {
    breakdown.stages.emplace_back(names[k], Median(durations[k]));
  }
  breakdown.client_total = Median(totals);
  breakdown.outside_handler = Median(outside);
  breakdown.calls = static_cast<int>(totals.size());
  return breakdown;
}

std::string FormatStageTable(const StageBreakdown& b, absl::Duration echo_p50) {
  std::string out = absl::StrFormat("where an Eval's time goes (median of %d traced calls, 1 client)\n",
                                    b.calls);
  static constexpr char row[] = "  %-36s %10s %12s\n";
  absl::StrAppendFormat(&out, row, "stage", "median", "x echo p50");
  auto share = [echo_p50](absl::Duration d) {
    return echo_p50 > absl::ZeroDuration()
               ? absl::StrFormat("%.2fx", absl::FDivDuration(d, echo_p50))
               : std::string("-");
  };
  auto us = [](absl::Duration d) {
    return absl::StrFormat("%.1f us", absl::ToDoubleMicroseconds(d));
  };
  for (const auto& [name, d] : b.stages) {
    absl::StrAppendFormat(&out, row, name, us(d), share(d));
  }
  absl::StrAppendFormat(&out, row, "client <-> handler (transport)", us(b.outside_handler),
                        share(b.outside_handler));
  absl::StrAppendFormat(&out, row, "client total", us(b.client_total), share(b.client_total));
  return out;
}

}  // namespace bench
}  // namespace pyexec
