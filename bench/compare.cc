#include "bench/compare.h"

#include "bench/thread_costs.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/status_util.h"
#include "echo.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace pyexec {
namespace bench {
namespace {

absl::Status WaitConnected(grpc::Channel& channel, const std::string& what) {
  if (!channel.WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", what));
  }
  return absl::OkStatus();
}

// Channels for `n` clients, following options.shared_channel.
absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> Channels(
    const std::string& address, int n, bool shared) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < n; ++i) {
    if (shared && i > 0) {
      channels.push_back(channels[0]);
      continue;
    }
    channels.push_back(MakeChannel(address, /*own_connection=*/!shared));
    absl::Status s = WaitConnected(*channels.back(), address);
    if (!s.ok()) return s;
  }
  return channels;
}

// Echo, or with `relayed` the same call through the relay server's helper
// processes (Relay).
CallFn EchoCall(const std::shared_ptr<grpc::Channel>& channel, const CompareOptions& options,
                bool relayed = false) {
  std::shared_ptr<Echo::Stub> stub = Echo::NewStub(channel);
  auto request = std::make_shared<EchoRequest>();
  request->set_payload(std::string(options.echo_payload_bytes, 'x'));
  const absl::Duration timeout = options.call_timeout;
  return [stub, request, timeout, relayed] {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    EchoResponse response;
    return FromGrpcStatus(relayed ? stub->Relay(&context, *request, &response)
                                  : stub->Echo(&context, *request, &response));
  };
}

}  // namespace

CallFn EvalCall(const Client& client, const std::string& session, absl::Duration timeout) {
  const CallOptions call_options{timeout};
  return [client, session, call_options]() -> absl::Status {
    absl::StatusOr<Result> r = client.Eval(session, "1+1", {}, call_options);
    if (!r.ok()) return r.status();
    if (!r->ok() || r->value.int_() != 2) {
      return absl::InternalError("Eval(\"1+1\") did not return 2");
    }
    return absl::OkStatus();
  };
}

namespace {

// One session bound per channel, and the Eval calls on them; unbound when
// destroyed.
struct EvalCallers {
  std::vector<Client> clients;
  std::vector<Session> sessions;
  std::vector<CallFn> calls;
};

absl::StatusOr<std::unique_ptr<EvalCallers>> BindEvalCallers(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const CompareOptions& options) {
  auto callers = std::make_unique<EvalCallers>();
  callers->clients.reserve(channels.size());
  for (const auto& channel : channels) {
    callers->clients.emplace_back(channel);
    absl::StatusOr<Session> session =
        Session::Bind(callers->clients.back(), absl::ZeroDuration(),
                      CallOptions{options.call_timeout});
    if (!session.ok()) return session.status();
    callers->calls.push_back(
        EvalCall(callers->clients.back(), session->token(), options.call_timeout));
    callers->sessions.push_back(*std::move(session));
  }
  return callers;
}

std::string Ratio(double r) { return absl::StrFormat("%.2fx", r); }

// What one server spent over a measured window, in all and by thread.
struct Counters {
  int pid = 0;
  ProcessTreeCounters before, after;
  ThreadCosts threads_before, threads_after;

  void Begin() {
    if (pid <= 0) return;
    threads_before = ReadThreadCosts(pid);
    before = ReadProcessTreeCounters(pid);
  }
  void End() {
    if (pid <= 0) return;
    after = ReadProcessTreeCounters(pid);
    threads_after = ReadThreadCosts(pid);
  }
};

ServerCost PerCall(const ProcessTreeCounters& before, const ProcessTreeCounters& after,
                   int64_t calls) {
  ServerCost cost;
  if (calls <= 0) return cost;
  cost.cpu = (after.cpu - before.cpu) / calls;
  cost.context_switches =
      static_cast<double>(after.context_switches - before.context_switches) / calls;
  return cost;
}

}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           bool own_connection) {
  grpc::ChannelArguments args;
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

absl::StatusOr<CompareReport> RunCompare(const std::string& pyexec_address,
                                         const std::string& echo_address,
                                         const CompareOptions& options) {
  CompareReport report;
  absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> echo1 =
      Channels(echo_address, 1, false);
  if (!echo1.ok()) return echo1.status();
  absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> eval1 =
      Channels(pyexec_address, 1, false);
  if (!eval1.ok()) return eval1.status();
  absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> echo_n =
      Channels(echo_address, options.concurrency, options.shared_channel);
  if (!echo_n.ok()) return echo_n.status();
  absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> eval_n =
      Channels(pyexec_address, options.concurrency, options.shared_channel);
  if (!eval_n.ok()) return eval_n.status();
  const bool relay = !options.relay_address.empty();
  std::vector<std::shared_ptr<grpc::Channel>> relay1, relay_n;
  if (relay) {
    absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> one =
        Channels(options.relay_address, 1, false);
    if (!one.ok()) return one.status();
    absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> n =
        Channels(options.relay_address, options.concurrency, options.shared_channel);
    if (!n.ok()) return n.status();
    relay1 = *std::move(one);
    relay_n = *std::move(n);
  }

  // One client, echo and Eval in turn call by call (RunInterleaved), so the
  // ratio compares the same moments of a machine whose speed drifts; each
  // server's CPU and switches over the window are divided by its own calls.
  absl::StatusOr<std::unique_ptr<EvalCallers>> one = BindEvalCallers(*eval1, options);
  if (!one.ok()) return one.status();
  Counters echo_counters{options.echo_pid}, eval_counters{options.pyexec_pid},
      relay_counters{relay ? options.relay_pid : 0};
  PhaseOptions counted = options.phase;
  counted.on_measure_begin = [&] {
    echo_counters.Begin();
    eval_counters.Begin();
    relay_counters.Begin();
  };
  counted.on_measure_end = [&] {
    echo_counters.End();
    eval_counters.End();
    relay_counters.End();
  };
  std::vector<CallFn> ways = {EchoCall((*echo1)[0], options), (*one)->calls[0]};
  if (relay) ways.push_back(EchoCall(relay1[0], options, /*relayed=*/true));
  std::vector<PhaseResult> latency = RunInterleaved(ways, counted);
  report.echo_latency = std::move(latency[0]);
  report.eval_latency = std::move(latency[1]);
  if (relay) {
    report.relay_latency = std::move(latency[2]);
    if (options.relay_pid > 0) {
      report.relay_cost =
          PerCall(relay_counters.before, relay_counters.after, report.relay_latency.ok);
      report.relay_threads = FormatThreadCosts(relay_counters.threads_before,
                                               relay_counters.threads_after,
                                               report.relay_latency.ok);
    }
  }
  if (options.echo_pid > 0) {
    report.echo_cost = PerCall(echo_counters.before, echo_counters.after, report.echo_latency.ok);
    report.echo_threads = FormatThreadCosts(echo_counters.threads_before,
                                            echo_counters.threads_after, report.echo_latency.ok);
  }
  if (options.pyexec_pid > 0) {
    report.eval_cost = PerCall(eval_counters.before, eval_counters.after, report.eval_latency.ok);
    report.eval_threads = FormatThreadCosts(eval_counters.threads_before,
                                            eval_counters.threads_after, report.eval_latency.ok);
  }
  one->reset();  // unbinds
  if (options.traced_calls > 0) {
    absl::StatusOr<StageBreakdown> stages =
        TraceEvalStages((*eval1)[0], options.traced_calls, options.call_timeout);
    if (!stages.ok()) return stages.status();
    report.stages = *std::move(stages);
  }

  std::vector<CallFn> echo_calls;
  for (const auto& channel : *echo_n) echo_calls.push_back(EchoCall(channel, options));
  report.echo_throughput = RunPhase(echo_calls, options.phase);
  if (relay) {
    std::vector<CallFn> relay_calls;
    for (const auto& channel : relay_n) {
      relay_calls.push_back(EchoCall(channel, options, /*relayed=*/true));
    }
    report.relay_throughput = RunPhase(relay_calls, options.phase);
  }
  absl::StatusOr<std::unique_ptr<EvalCallers>> many = BindEvalCallers(*eval_n, options);
  if (!many.ok()) return many.status();
  report.eval_throughput = RunPhase((*many)->calls, options.phase);
  return report;
}

std::string FormatCompareTable(const CompareReport& r,
                               const CompareOptions& options) {
  const double latency_ratio =
      absl::ToDoubleMicroseconds(r.eval_latency.latency.p50) /
      std::max(absl::ToDoubleMicroseconds(r.echo_latency.latency.p50), 1e-9);
  const double p99_ratio =
      absl::ToDoubleMicroseconds(r.eval_latency.latency.p99) /
      std::max(absl::ToDoubleMicroseconds(r.echo_latency.latency.p99), 1e-9);
  const double throughput_ratio =
      r.eval_throughput.throughput / std::max(r.echo_throughput.throughput, 1e-9);
  const bool latency_ok = latency_ratio <= options.latency_target;
  const bool throughput_ok = throughput_ratio >= options.throughput_target;

  std::string out;
  static constexpr char row[] = "%-30s %16s %16s %8s %9s %6s\n";
  absl::StrAppendFormat(&out, row, "", "echo", "pyexec Eval", "ratio", "target",
                        "");
  absl::StrAppendFormat(&out, row, "p50 latency, 1 client",
                        FormatMicros(r.echo_latency.latency.p50),
                        FormatMicros(r.eval_latency.latency.p50),
                        Ratio(latency_ratio),
                        absl::StrCat("<=", Ratio(options.latency_target)),
                        latency_ok ? "PASS" : "MISS");
  absl::StrAppendFormat(&out, row, "p99 latency, 1 client",
                        FormatMicros(r.echo_latency.latency.p99),
                        FormatMicros(r.eval_latency.latency.p99),
                        Ratio(p99_ratio), "", "");
  absl::StrAppendFormat(
      &out, row,
      absl::StrCat("throughput, ", options.concurrency, " clients"),
      absl::StrFormat("%.0f/s", r.echo_throughput.throughput),
      absl::StrFormat("%.0f/s", r.eval_throughput.throughput),
      Ratio(throughput_ratio),
      absl::StrCat(">=", Ratio(options.throughput_target)),
      throughput_ok ? "PASS" : "MISS");
  absl::StrAppendFormat(
      &out, row,
      absl::StrCat("p50/p99 latency, ", options.concurrency, " clients"),
      absl::StrCat(FormatMicros(r.echo_throughput.latency.p50), "/",
                   FormatMicros(r.echo_throughput.latency.p99)),
      absl::StrCat(FormatMicros(r.eval_throughput.latency.p50), "/",
                   FormatMicros(r.eval_throughput.latency.p99)),
      "", "", "");
  if (r.eval_cost.cpu > absl::ZeroDuration()) {
    absl::StrAppendFormat(
        &out, row, "server CPU per call, 1 client", FormatMicros(r.echo_cost.cpu),
        FormatMicros(r.eval_cost.cpu),
        Ratio(absl::FDivDuration(r.eval_cost.cpu, r.echo_cost.cpu)), "", "");
    absl::StrAppendFormat(
        &out, row, "context switches per call", absl::StrFormat("%.1f", r.echo_cost.context_switches),
        absl::StrFormat("%.1f", r.eval_cost.context_switches), "", "", "");
  }
  if (!r.eval_threads.empty()) {
    absl::StrAppend(&out, "\necho server, by thread, 1 client:\n", r.echo_threads);
    absl::StrAppend(&out, "pyexecd and its workers, by thread, 1 client:\n", r.eval_threads);
  }
  if (r.stages.calls > 0) {
    absl::StrAppend(&out, "\n", FormatStageTable(r.stages, r.echo_latency.latency.p50));
  }
  if (r.relay_latency.ok > 0) {
    // The floor: what any design that runs the call in another process pays
    // here, and how far Eval is above it.
    const double relay_p50 = absl::ToDoubleMicroseconds(r.relay_latency.latency.p50);
    const double echo_p50 = absl::ToDoubleMicroseconds(r.echo_latency.latency.p50);
    const double eval_p50 = absl::ToDoubleMicroseconds(r.eval_latency.latency.p50);
    absl::StrAppend(&out,
                    "\nthe floor of a call run in another process (Relay: echo's payload through a "
                    "helper process\nover a Unix socket, answered from an I/O thread), same run:\n");
    static constexpr char floor_row[] = "%-30s %16s %10s %14s\n";
    absl::StrAppendFormat(&out, floor_row, "", "relay", "x echo", "Eval x relay");
    absl::StrAppendFormat(&out, floor_row, "p50 latency, 1 client",
                          FormatMicros(r.relay_latency.latency.p50),
                          Ratio(relay_p50 / std::max(echo_p50, 1e-9)),
                          Ratio(eval_p50 / std::max(relay_p50, 1e-9)));
    if (r.relay_throughput.throughput > 0) {
      absl::StrAppendFormat(
          &out, floor_row, absl::StrCat("throughput, ", options.concurrency, " clients"),
          absl::StrFormat("%.0f/s", r.relay_throughput.throughput),
          Ratio(r.relay_throughput.throughput / std::max(r.echo_throughput.throughput, 1e-9)),
          Ratio(r.eval_throughput.throughput / r.relay_throughput.throughput));
    }
    if (r.relay_cost.cpu > absl::ZeroDuration() && r.echo_cost.cpu > absl::ZeroDuration()) {
      absl::StrAppendFormat(&out, floor_row, "server CPU per call, 1 client",
                            FormatMicros(r.relay_cost.cpu),
                            Ratio(absl::FDivDuration(r.relay_cost.cpu, r.echo_cost.cpu)),
                            Ratio(absl::FDivDuration(r.eval_cost.cpu, r.relay_cost.cpu)));
      absl::StrAppendFormat(&out, floor_row, "context switches per call",
                            absl::StrFormat("%.1f", r.relay_cost.context_switches), "", "");
    }
    if (!r.relay_threads.empty()) {
      absl::StrAppend(&out, "relay server and its helpers, by thread, 1 client:\n",
                      r.relay_threads);
    }
  }
  AppendPhaseErrors({{"echo, 1 client", &r.echo_latency},
                     {"eval, 1 client", &r.eval_latency},
                     {"echo, N clients", &r.echo_throughput},
                     {"eval, N clients", &r.eval_throughput},
                     {"relay, 1 client", &r.relay_latency},
                     {"relay, N clients", &r.relay_throughput}},
                    &out);
  return out;
}

}  // namespace bench
}  // namespace pyexec
