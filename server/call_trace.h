#ifndef PYEXEC_SERVER_CALL_TRACE_H_
#define PYEXEC_SERVER_CALL_TRACE_H_

// The per-call trace a client asks for with the metadata x-pyexec-trace
// (server/call_metadata.h): where one call's time went, stage by stage, so
// that the hot path can be judged against a bare gRPC echo (pyexec_bench).

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {

// The trailing metadata value: each stage's CLOCK_MONOTONIC time in
// nanoseconds after the handler was entered, in the order the call passes
// them ("-" for a stage not reached), e.g.
//   entered=0 pool_sent=9100 worker_received=31000 python_start=33000
//   python_end=36500 worker_sent=38000 pool_received=52000 finish=61000
inline std::string TraceText(const internal::CallTrace& trace, int64_t entered_ns,
                             int64_t finish_ns) {
  auto at = [entered_ns](int64_t ns) {
    return ns == 0 ? std::string("-") : absl::StrCat(ns - entered_ns);
  };
  return absl::StrCat("entered=0 pool_sent=", at(trace.pool_sent_ns()),
                      " worker_received=", at(trace.worker_received_ns()),
                      " python_start=", at(trace.python_start_ns()),
                      " python_end=", at(trace.python_end_ns()),
                      " worker_sent=", at(trace.worker_sent_ns()),
                      " pool_received=", at(trace.pool_received_ns()),
                      " finish=", at(finish_ns));
}

}  // namespace pyexec

#endif  // PYEXEC_SERVER_CALL_TRACE_H_
