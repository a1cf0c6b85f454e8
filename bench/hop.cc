#include "bench/hop.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/compare.h"
#include "clients/cpp/client.h"

namespace pyexec {
namespace bench {
namespace {

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connected(const std::string& address,
                                                         absl::Duration timeout) {
  std::shared_ptr<grpc::Channel> channel = MakeChannel(address, true);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  return channel;
}

// `n` sessions bound on the owner, and for each a client on the owner, one
// on the other replica, and one on the other replica that routes to owners
// (own channels, own connections).
struct Callers {
  std::vector<Client> owner_clients;
  std::vector<Session> sessions;
  std::vector<CallFn> direct;
  std::vector<CallFn> forwarded;
  std::vector<CallFn> routed;
};

absl::StatusOr<std::unique_ptr<Callers>> MakeCallers(const std::string& owner,
                                                     const std::string& other,
                                                     int n, const HopOptions& options) {
  const absl::Duration timeout = options.call_timeout;
  auto callers = std::make_unique<Callers>();
  callers->owner_clients.reserve(n);
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> to_owner = Connected(owner, options.connect_timeout);
    if (!to_owner.ok()) return to_owner.status();
    absl::StatusOr<std::shared_ptr<grpc::Channel>> to_other = Connected(other, options.connect_timeout);
    if (!to_other.ok()) return to_other.status();
    callers->owner_clients.emplace_back(*to_owner);
    absl::StatusOr<Session> session = Session::Bind(
        callers->owner_clients.back(), absl::ZeroDuration(), CallOptions{timeout});
    if (!session.ok()) return session.status();
    callers->direct.push_back(
        EvalCall(callers->owner_clients.back(), session->token(), timeout));
    callers->forwarded.push_back(EvalCall(Client(*to_other), session->token(), timeout));
    // Its first call is forwarded and names the owner (x-pyexec-owner); the
    // warmup makes it, so the measured calls go to the owner directly.
    ChannelOptions routing;
    routing.route_to_owner = true;
    routing.owner_connect_timeout = options.connect_timeout;
    absl::StatusOr<Client> router = Client::Connect(other, routing);
    if (!router.ok()) return router.status();
    callers->routed.push_back(EvalCall(*router, session->token(), timeout));
    callers->sessions.push_back(*std::move(session));
  }
  return callers;
}

std::string Ratio(double r) { return absl::StrFormat("%.2fx", r); }

}  // namespace

absl::StatusOr<HopReport> RunHop(const std::string& owner_address,
                                 const std::string& other_address,
                                 const HopOptions& options) {
  HopReport report;
  absl::StatusOr<std::unique_ptr<Callers>> one =
      MakeCallers(owner_address, other_address, 1, options);
  if (!one.ok()) return one.status();
  // One client's three ways, call by call in turn (RunInterleaved), so that
  // their ratios compare the same moments of a machine whose speed drifts.
  std::vector<PhaseResult> latency = RunInterleaved(
      {(*one)->direct[0], (*one)->forwarded[0], (*one)->routed[0]}, options.phase);
  report.direct_latency = std::move(latency[0]);
  report.forwarded_latency = std::move(latency[1]);
  report.routed_latency = std::move(latency[2]);
  one->reset();  // unbinds
  absl::StatusOr<std::unique_ptr<Callers>> many = MakeCallers(
      owner_address, other_address, options.concurrency, options);
  if (!many.ok()) return many.status();
  report.direct_throughput = RunPhase((*many)->direct, options.phase);
  report.forwarded_throughput = RunPhase((*many)->forwarded, options.phase);
  report.routed_throughput = RunPhase((*many)->routed, options.phase);
  return report;
}

std::string FormatHopTable(const HopReport& r, const HopOptions& options) {
  auto us = [](absl::Duration d) { return absl::ToDoubleMicroseconds(d); };
  auto slower = [&](absl::Duration d, absl::Duration direct) {
    return Ratio(us(d) / std::max(us(direct), 1e-9));
  };
  auto rate = [](double t) { return absl::StrFormat("%.0f/s", t); };
  auto faster = [](double t, double direct) { return Ratio(t / std::max(direct, 1e-9)); };
  std::string out;
  // clang checks formats at compile time
  static constexpr char row[] = "%-26s %15s %15s %8s %15s %8s\n";
  absl::StrAppendFormat(&out, row, "", "direct (owner)", "via non-owner", "ratio",
                        "client-routed", "ratio");
  absl::StrAppendFormat(
      &out, row, "p50 latency, 1 client", FormatMicros(r.direct_latency.latency.p50),
      FormatMicros(r.forwarded_latency.latency.p50),
      slower(r.forwarded_latency.latency.p50, r.direct_latency.latency.p50),
      FormatMicros(r.routed_latency.latency.p50),
      slower(r.routed_latency.latency.p50, r.direct_latency.latency.p50));
  absl::StrAppendFormat(
      &out, row, "p99 latency, 1 client", FormatMicros(r.direct_latency.latency.p99),
      FormatMicros(r.forwarded_latency.latency.p99),
      slower(r.forwarded_latency.latency.p99, r.direct_latency.latency.p99),
      FormatMicros(r.routed_latency.latency.p99),
      slower(r.routed_latency.latency.p99, r.direct_latency.latency.p99));
  absl::StrAppendFormat(
      &out, row, absl::StrCat("throughput, ", options.concurrency, " clients"),
      rate(r.direct_throughput.throughput), rate(r.forwarded_throughput.throughput),
      faster(r.forwarded_throughput.throughput, r.direct_throughput.throughput),
      rate(r.routed_throughput.throughput),
      faster(r.routed_throughput.throughput, r.direct_throughput.throughput));
  absl::StrAppendFormat(
      &out, row, absl::StrCat("p50 latency, ", options.concurrency, " clients"),
      FormatMicros(r.direct_throughput.latency.p50),
      FormatMicros(r.forwarded_throughput.latency.p50),
      slower(r.forwarded_throughput.latency.p50, r.direct_throughput.latency.p50),
      FormatMicros(r.routed_throughput.latency.p50),
      slower(r.routed_throughput.latency.p50, r.direct_throughput.latency.p50));
  absl::StrAppendFormat(
      &out, "extra hop, p50 of 1 client: %s forwarded, %s client-routed\n",
      FormatMicros(r.forwarded_latency.latency.p50 - r.direct_latency.latency.p50),
      FormatMicros(r.routed_latency.latency.p50 - r.direct_latency.latency.p50));
  AppendPhaseErrors({{"direct, 1 client", &r.direct_latency},
                     {"forwarded, 1 client", &r.forwarded_latency},
                     {"client-routed, 1 client", &r.routed_latency},
                     {"direct, N clients", &r.direct_throughput},
                     {"forwarded, N clients", &r.forwarded_throughput},
                     {"client-routed, N clients", &r.routed_throughput}},
                    &out);
  return out;
}

}  // namespace bench
}  // namespace pyexec
