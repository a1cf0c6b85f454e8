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

CallFn EvalOn(const Client& client, const std::string& session,
              absl::Duration timeout) {
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

// `n` sessions bound on the owner, and for each a client on the owner and
// one on the other replica (own channels, own connections).
struct Callers {
  std::vector<Client> owner_clients;
  std::vector<Session> sessions;
  std::vector<CallFn> direct;
  std::vector<CallFn> forwarded;
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
        EvalOn(callers->owner_clients.back(), session->token(), timeout));
    callers->forwarded.push_back(EvalOn(Client(*to_other), session->token(), timeout));
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
  report.direct_latency = RunPhase((*one)->direct, options.phase);
  report.forwarded_latency = RunPhase((*one)->forwarded, options.phase);
  one->reset();  // unbinds
  absl::StatusOr<std::unique_ptr<Callers>> many = MakeCallers(
      owner_address, other_address, options.concurrency, options);
  if (!many.ok()) return many.status();
  report.direct_throughput = RunPhase((*many)->direct, options.phase);
  report.forwarded_throughput = RunPhase((*many)->forwarded, options.phase);
  return report;
}

std::string FormatHopTable(const HopReport& r, const HopOptions& options) {
  auto us = [](absl::Duration d) { return absl::ToDoubleMicroseconds(d); };
  std::string out;
  static constexpr char row[] = "%-30s %16s %16s %8s\n";  // clang checks formats at compile time
  absl::StrAppendFormat(&out, row, "", "direct (owner)", "via non-owner",
                        "ratio");
  absl::StrAppendFormat(
      &out, row, "p50 latency, 1 client", FormatMicros(r.direct_latency.latency.p50),
      FormatMicros(r.forwarded_latency.latency.p50),
      Ratio(us(r.forwarded_latency.latency.p50) /
            std::max(us(r.direct_latency.latency.p50), 1e-9)));
  absl::StrAppendFormat(
      &out, row, "p99 latency, 1 client", FormatMicros(r.direct_latency.latency.p99),
      FormatMicros(r.forwarded_latency.latency.p99),
      Ratio(us(r.forwarded_latency.latency.p99) /
            std::max(us(r.direct_latency.latency.p99), 1e-9)));
  absl::StrAppendFormat(
      &out, row, absl::StrCat("throughput, ", options.concurrency, " clients"),
      absl::StrFormat("%.0f/s", r.direct_throughput.throughput),
      absl::StrFormat("%.0f/s", r.forwarded_throughput.throughput),
      Ratio(r.forwarded_throughput.throughput /
            std::max(r.direct_throughput.throughput, 1e-9)));
  absl::StrAppendFormat(
      &out, row, absl::StrCat("p50 latency, ", options.concurrency, " clients"),
      FormatMicros(r.direct_throughput.latency.p50),
      FormatMicros(r.forwarded_throughput.latency.p50),
      Ratio(us(r.forwarded_throughput.latency.p50) /
            std::max(us(r.direct_throughput.latency.p50), 1e-9)));
  absl::StrAppendFormat(
      &out, "extra hop, p50 of 1 client: %s\n",
      FormatMicros(r.forwarded_latency.latency.p50 - r.direct_latency.latency.p50));
  AppendPhaseErrors({{"direct, 1 client", &r.direct_latency},
                     {"forwarded, 1 client", &r.forwarded_latency},
                     {"direct, N clients", &r.direct_throughput},
                     {"forwarded, N clients", &r.forwarded_throughput}},
                    &out);
  return out;
}

}  // namespace bench
}  // namespace pyexec
