#include "bench/scale.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/process.h"
#include "bench/sessions.h"
#include "common/procfs.h"
#include "grpcpp/create_channel.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {
namespace bench {
namespace {

std::chrono::system_clock::time_point In(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

absl::StatusOr<std::string> Bind(v1::PyExec::Stub& stub, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(In(timeout));
  v1::BindRequest request;
  request.set_idle_timeout_seconds(24 * 3600);
  v1::BindResponse response;
  grpc::Status s = stub.Bind(&context, request, &response);
  if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  return response.session();
}

void Unbind(v1::PyExec::Stub& stub, const std::string& session, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(In(timeout));
  v1::UnbindRequest request;
  request.set_session(session);
  v1::UnbindResponse response;
  stub.Unbind(&context, request, &response);
}

absl::StatusOr<v1::EvalResponse> Eval(v1::PyExec::Stub& stub, const std::string& session,
                                      const std::string& code, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(In(timeout));
  v1::EvalRequest request;
  request.set_session(session);
  request.set_code(code);
  v1::EvalResponse response;
  grpc::Status s = stub.Eval(&context, request, &response);
  if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  return response;
}

// pyexecd's own CPU time (its threads, not its children).
absl::Duration ProcessCpu(pid_t pid) {
  std::vector<std::string> f = ProcStatFields(pid);
  int64_t utime = 0, stime = 0;
  // ProcStatFields starts at the state (field 3): utime is field 14.
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) {
    return absl::ZeroDuration();
  }
  return absl::Seconds(static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK));
}

std::string Ratio(double value, double base) {
  return base > 0 ? absl::StrFormat("%.2fx", value / base) : std::string("-");
}

}  // namespace

std::vector<ScaleStep> RunScale(const std::string& address, pid_t server_pid,
                                const ScaleOptions& options) {
  std::vector<ScaleStep> steps;
  std::vector<std::string> bound;
  std::mutex bound_mu;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < std::max(1, options.bind_threads); ++i) {
    channels.push_back(OwnChannel(address));
  }
  auto probe_stub = v1::PyExec::NewStub(OwnChannel(address));
  for (int target : options.steps) {
    ScaleStep step;
    // Bind up to the step, from several threads.
    std::atomic<int> to_bind(target - static_cast<int>(bound.size()));
    std::string first_error;
    std::vector<std::thread> threads;
    for (const auto& channel : channels) {
      threads.emplace_back([&, channel] {
        auto stub = v1::PyExec::NewStub(channel);
        while (to_bind.fetch_sub(1) > 0) {
          absl::StatusOr<std::string> s = Bind(*stub, options.call_timeout);
          std::lock_guard<std::mutex> lock(bound_mu);
          if (!s.ok()) {
            if (first_error.empty()) first_error = s.status().ToString();
            to_bind = 0;
            return;
          }
          bound.push_back(*std::move(s));
        }
      });
    }
    for (std::thread& t : threads) t.join();
    step.sessions = static_cast<int>(bound.size());
    if (!first_error.empty()) {
      step.error = absl::StrCat("Bind failed at ", bound.size(), " sessions: ", first_error);
      steps.push_back(step);
      break;
    }
    // Idle CPU with every session bound and nothing running.
    absl::SleepFor(absl::Seconds(1));
    const absl::Duration cpu_before = ProcessCpu(server_pid);
    absl::SleepFor(options.idle_window);
    step.idle_cpu_percent = 100 * absl::FDivDuration(ProcessCpu(server_pid) - cpu_before,
                                                     options.idle_window);
    step.pyexecd_fds = FdCount(server_pid);
    // Eval on the last session bound (its worker is cold, as a client's
    // next session would be), then Bind + Unbind pairs.
    std::vector<absl::Duration> evals, binds;
    for (int i = 0; i < options.probe_evals; ++i) {
      const absl::Time start = absl::Now();
      absl::StatusOr<v1::EvalResponse> r =
          Eval(*probe_stub, bound.back(), "1+1", options.call_timeout);
      if (!r.ok()) {
        step.error = absl::StrCat("Eval failed: ", r.status().ToString());
        break;
      }
      evals.push_back(absl::Now() - start);
    }
    for (int i = 0; i < options.probe_binds && step.error.empty(); ++i) {
      const absl::Time start = absl::Now();
      absl::StatusOr<std::string> s = Bind(*probe_stub, options.call_timeout);
      if (!s.ok()) {
        step.error = absl::StrCat("probe Bind failed: ", s.status().ToString());
        break;
      }
      binds.push_back(absl::Now() - start);
      Unbind(*probe_stub, *s, options.call_timeout);
    }
    step.eval = Summarize(evals);
    step.bind = Summarize(binds);
    // USS of a sample of session workers (their pids asked of them).
    double uss_kb = 0;
    int sampled = 0;
    for (size_t i = 0; i < bound.size() && sampled < 20; i += std::max<size_t>(1, bound.size() / 20)) {
      absl::StatusOr<v1::EvalResponse> pid =
          Eval(*probe_stub, bound[i], "__import__('os').getpid()", options.call_timeout);
      if (!pid.ok()) continue;
      SmapsRollup m = ParseSmapsRollup(
          ReadProcFile(absl::StrCat("/proc/", pid->value().int_(), "/smaps_rollup")));
      uss_kb += m.private_kb;
      ++sampled;
    }
    step.uss_mib = sampled > 0 ? uss_kb / sampled / 1024 : 0;
    steps.push_back(step);
    if (!step.error.empty()) break;
  }
  // Unbind everything, from several threads.
  std::atomic<size_t> next(0);
  std::vector<std::thread> threads;
  for (const auto& channel : channels) {
    threads.emplace_back([&, channel] {
      auto stub = v1::PyExec::NewStub(channel);
      for (size_t i = next++; i < bound.size(); i = next++) {
        Unbind(*stub, bound[i], options.call_timeout);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return steps;
}

std::string FormatScaleTable(const std::vector<ScaleStep>& steps) {
  std::string out;
  static constexpr char row[] = "%9s %11s %7s %20s %7s %8s %10s %9s\n";
  absl::StrAppendFormat(&out, row, "sessions", "Eval p50", "ratio", "Bind p50 / p99", "ratio",
                        "fds", "idle CPU", "USS MiB");
  if (steps.empty()) return out;
  const ScaleStep& base = steps.front();
  for (const ScaleStep& s : steps) {
    absl::StrAppendFormat(
        &out, row, absl::StrCat(s.sessions),
        absl::StrFormat("%.0f us", absl::ToDoubleMicroseconds(s.eval.p50)),
        Ratio(absl::ToDoubleMicroseconds(s.eval.p50), absl::ToDoubleMicroseconds(base.eval.p50)),
        absl::StrFormat("%.2f / %.2f ms", absl::ToDoubleMilliseconds(s.bind.p50),
                        absl::ToDoubleMilliseconds(s.bind.p99)),
        Ratio(absl::ToDoubleMicroseconds(s.bind.p50), absl::ToDoubleMicroseconds(base.bind.p50)),
        absl::StrCat(s.pyexecd_fds), absl::StrFormat("%.2f%%", s.idle_cpu_percent),
        absl::StrFormat("%.2f", s.uss_mib));
    if (!s.error.empty()) absl::StrAppend(&out, "  stopped: ", s.error, "\n");
  }
  return out;
}

}  // namespace bench
}  // namespace pyexec
