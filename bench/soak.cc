#include "bench/soak.h"

#include <signal.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "bench/compare.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "common/procfs.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace pyexec {
namespace bench {
namespace {

// Kills this long before a stateless call started may still explain its
// ABORTED: the call can be dispatched to a worker that is already dying.
constexpr absl::Duration kKillSlack = absl::Seconds(1);

// Everything the load threads observe. This class is thread-safe.
class Tally {
 public:
  explicit Tally(const SoakOptions& options) : options_(options) {}

  // Records one finished call. `kind` names the operation for the report;
  // `ok` is false for a wrong result even if the status is OK; `timed`
  // marks ordinary calls whose latency counts toward p99.
  void Observe(absl::string_view kind, const absl::Status& status, bool ok,
               absl::Duration elapsed, absl::Duration deadline,
               const FailureContext& context, bool timed) {
    absl::MutexLock lock(&mu_);
    ++report_.answered;
    if (elapsed > deadline + options_.hang_margin) ++report_.hangs;
    if (status.ok() && ok) {
      ++report_.ok;
      if (timed) latencies_.push_back(elapsed);
      return;
    }
    if (status.ok()) {
      // OK but wrong: a runaway or os._exit that "succeeded" lands here too.
      ++report_.unexpected[absl::StrCat(kind, " wrong result")];
      return;
    }
    const std::string key =
        absl::StrCat(kind, " ", absl::StatusCodeToString(status.code()));
    if (IsExpectedFailure(status, context)) {
      ++report_.expected[key];
    } else {
      ++report_.unexpected[key];
      if (unexpected_examples_.size() < 10) {
        unexpected_examples_.push_back(absl::StrCat(key, ": ", status.message()));
      }
    }
  }

  void CountRunaway() {
    absl::MutexLock lock(&mu_);
    ++report_.runaways;
  }

  void CountExit() {
    absl::MutexLock lock(&mu_);
    ++report_.exits;
  }

  // Moves the figures into a report.
  SoakReport Finish() {
    absl::MutexLock lock(&mu_);
    report_.latency = Summarize(latencies_);
    report_.unexpected_examples = unexpected_examples_;
    return report_;
  }

 private:
  const SoakOptions options_;
  absl::Mutex mu_;
  SoakReport report_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> latencies_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unexpected_examples_ ABSL_GUARDED_BY(mu_);
};

ServerSnapshot Snapshot(const Client& client, const std::string& address,
                        pid_t pid) {
  ServerSnapshot s;
  if (pid > 0) {
    s.rss_kb = RssKb(pid);
    s.fds = FdCount(pid);
    s.worker_processes = static_cast<int64_t>(ChildPids(pid).size());
  }
  absl::StatusOr<v1::GetStatsResponse> stats =
      client.GetStats(CallOptions{absl::Seconds(5)});
  if (stats.ok()) {
    s.num_workers = stats->num_workers();
    s.available_workers = stats->available_workers();
  }
  auto health = grpc::health::v1::Health::NewStub(MakeChannel(address, false));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(&context, request, &response);
  s.health = status.ok()
                 ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                       response.status())
                 : absl::StrCat("error ", status.error_code(), " ",
                                status.error_message());
  return s;
}

// One thread holding a bound session, checking that its state persists.
void BoundLoop(const Client& client, const SoakOptions& options, int index,
               const std::atomic<bool>& stop, const KillLog& kills,
               Tally& tally) {
  std::mt19937_64 rng(options.seed * 1000 + index);
  std::uniform_real_distribution<double> dice(0, 1);
  const CallOptions normal{options.call_timeout};
  while (!stop.load()) {
    absl::Time t0 = absl::Now();
    absl::StatusOr<BindResult> bound = client.Bind(absl::ZeroDuration(), normal);
    tally.Observe("bind", bound.status(), true, absl::Now() - t0,
                  options.call_timeout, FailureContext(), false);
    if (!bound.ok()) {
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    const std::string token = bound->session;
    const absl::Time bound_at = absl::Now();
    pid_t pid = 0;
    // Whether the session's loss is explained by an injected fault.
    auto lost = [&] {
      return pid > 0 ? kills.WasKilled(pid)
                     : kills.AnyBetween(bound_at - kKillSlack, absl::Now());
    };
    // Runs one call and records it; returns false if the session is gone.
    auto step = [&](absl::string_view kind, auto&& call, auto&& check,
                    FailureContext context, absl::Duration deadline,
                    bool timed) {
      const absl::Time start = absl::Now();
      absl::StatusOr<Result> r = call();
      const absl::Duration elapsed = absl::Now() - start;
      if (!r.ok()) context.session_lost = context.session_lost || lost();
      const bool ok = r.ok() && r->ok() && check(*r);
      tally.Observe(kind, r.status(), ok, elapsed, deadline, context, timed);
      return !(absl::IsAborted(r.status()) || absl::IsNotFound(r.status()));
    };

    bool alive = step(
        "bound getpid",
        [&] { return client.Eval(token, "__import__('os').getpid()", {}, normal); },
        [&](const Result& r) {
          pid = static_cast<pid_t>(r.value.int_());
          return pid > 0;
        },
        FailureContext(), options.call_timeout, true);
    int64_t counter = 0;
    alive = alive && step(
        "bound exec", [&] { return client.Exec(token, "x = 0", {}, normal); },
        [](const Result&) { return true; }, FailureContext(),
        options.call_timeout, true);
    for (int n = 0; alive && n < options.calls_per_session && !stop.load(); ++n) {
      const double roll = dice(rng);
      if (roll < options.exit_probability) {
        tally.CountExit();
        FailureContext context;
        context.exit = true;
        step("bound os._exit",
             [&] { return client.Exec(token, "import os; os._exit(7)", {}, normal); },
             [](const Result&) { return false; }, context, options.call_timeout,
             false);
        context = FailureContext();
        context.session_lost = true;
        step("bound after-exit",
             [&] { return client.Eval(token, "x", {}, normal); },
             [](const Result&) { return false; }, context, options.call_timeout,
             false);
        alive = false;
      } else if (roll < options.exit_probability + options.runaway_probability) {
        tally.CountRunaway();
        FailureContext context;
        context.runaway = true;
        alive = step(
            "bound runaway",
            [&] {
              return client.Exec(token, "while True: pass", {},
                                 CallOptions{options.runaway_timeout});
            },
            [](const Result&) { return false; }, context,
            options.runaway_timeout, false);
      } else {
        alive = step(
            "bound eval", [&] { return client.Eval(token, "x", {}, normal); },
            [&](const Result& r) { return r.value.int_() == counter; },
            FailureContext(), options.call_timeout, true);
        alive = alive && step(
            "bound exec", [&] { return client.Exec(token, "x += 1", {}, normal); },
            [](const Result&) { return true; }, FailureContext(),
            options.call_timeout, true);
        ++counter;
      }
    }
    t0 = absl::Now();
    absl::Status unbound = client.Unbind(token, normal);
    tally.Observe("unbind", unbound, true, absl::Now() - t0, options.call_timeout,
                  FailureContext(), false);
  }
}

// One thread of stateless calls.
void StatelessLoop(const Client& client, const SoakOptions& options, int index,
                   const std::atomic<bool>& stop, const KillLog& kills,
                   Tally& tally) {
  std::mt19937_64 rng(options.seed * 1000 + 500 + index);
  std::uniform_real_distribution<double> dice(0, 1);
  const CallOptions normal{options.call_timeout};
  for (int64_t n = 0; !stop.load(); ++n) {
    const absl::Time start = absl::Now();
    FailureContext context;
    absl::StatusOr<Result> r;
    std::string kind;
    bool right = false;
    absl::Duration deadline = options.call_timeout;
    if (dice(rng) < options.runaway_probability) {
      tally.CountRunaway();
      kind = "stateless runaway";
      context.runaway = true;
      deadline = options.runaway_timeout;
      r = client.Exec("", "while True: pass", {}, CallOptions{deadline});
    } else if (n % 3 == 0) {
      kind = "stateless eval";
      r = client.Eval("", "sum(range(100))", {}, normal);
      right = r.ok() && r->ok() && r->value.int_() == 4950;
    } else if (n % 3 == 1) {
      kind = "stateless exec";
      r = client.Exec("", "y = [i * i for i in range(50)]", {}, normal);
      right = r.ok() && r->ok();
    } else {
      kind = "stateless call";
      r = client.Call("", "math", "sqrt", {MakeFloat(16.0)}, {}, normal);
      right = r.ok() && r->ok() && r->value.float_() == 4.0;
    }
    const absl::Time end = absl::Now();
    context.kill_nearby = kills.AnyBetween(start - kKillSlack, end);
    tally.Observe(kind, r.status(), right, end - start, deadline, context,
                  !context.runaway);
  }
}

std::string FormatSnapshot(const ServerSnapshot& s) {
  return absl::StrFormat(
      "rss=%dKiB fds=%d worker_processes=%d num_workers=%d available=%d "
      "health=%s",
      s.rss_kb, s.fds, s.worker_processes, s.num_workers, s.available_workers,
      s.health);
}

}  // namespace

void KillLog::Record(pid_t pid, absl::Time when) {
  absl::MutexLock lock(&mu_);
  by_pid_[pid] = when;
  times_.push_back(when);
}

bool KillLog::WasKilled(pid_t pid) const {
  absl::MutexLock lock(&mu_);
  return by_pid_.count(pid) > 0;
}

bool KillLog::AnyBetween(absl::Time from, absl::Time to) const {
  absl::MutexLock lock(&mu_);
  // Times are appended in order: search from the newest.
  for (auto it = times_.rbegin(); it != times_.rend(); ++it) {
    if (*it < from) return false;
    if (*it <= to) return true;
  }
  return false;
}

int64_t KillLog::count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(times_.size());
}

int64_t SoakReport::unexpected_total() const {
  int64_t total = 0;
  for (const auto& [key, count] : unexpected) total += count;
  return total;
}

bool IsExpectedFailure(const absl::Status& status, const FailureContext& c) {
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return c.runaway;
    case absl::StatusCode::kAborted:
      return c.exit || c.session_lost || c.kill_nearby;
    case absl::StatusCode::kNotFound:
      return c.session_lost;
    default:
      return false;
  }
}

SoakReport RunSoak(const std::string& address, const SoakOptions& options) {
  Client client(MakeChannel(address, /*own_connection=*/false));
  Tally tally(options);
  KillLog kills;
  const ServerSnapshot start = Snapshot(client, address, options.server_pid);

  std::atomic<bool> stop{false};
  absl::Notification done;
  std::vector<std::thread> threads;
  for (int i = 0; i < options.bound_threads; ++i) {
    threads.emplace_back([&, i] { BoundLoop(client, options, i, stop, kills, tally); });
  }
  for (int i = 0; i < options.stateless_threads; ++i) {
    threads.emplace_back(
        [&, i] { StatelessLoop(client, options, i, stop, kills, tally); });
  }
  std::thread killer;
  if (options.server_pid > 0 && options.kill_interval > absl::ZeroDuration()) {
    killer = std::thread([&] {
      std::mt19937_64 rng(options.seed);
      while (!done.WaitForNotificationWithTimeout(options.kill_interval)) {
        std::vector<pid_t> children = ChildPids(options.server_pid);
        if (children.empty()) continue;
        const pid_t victim = children[rng() % children.size()];
        kills.Record(victim, absl::Now());
        kill(victim, SIGKILL);
      }
    });
  }
  const absl::Time t0 = absl::Now();
  absl::SleepFor(options.duration);
  done.Notify();
  stop.store(true);
  if (killer.joinable()) killer.join();
  for (std::thread& t : threads) t.join();
  const absl::Duration elapsed = absl::Now() - t0;

  // Let the pool heal before the closing figures.
  const absl::Time settle_until = absl::Now() + absl::Seconds(20);
  while (options.expected_workers > 0 && absl::Now() < settle_until) {
    absl::StatusOr<v1::GetStatsResponse> stats =
        client.GetStats(CallOptions{absl::Seconds(2)});
    if (stats.ok() && stats->available_workers() >=
                          static_cast<uint32_t>(options.expected_workers)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  SoakReport report = tally.Finish();
  report.kills = kills.count();
  report.start = start;
  report.end = Snapshot(client, address, options.server_pid);
  report.elapsed = elapsed;
  return report;
}

std::string FormatSoakReport(const SoakReport& r) {
  std::string out;
  absl::StrAppendFormat(&out, "soak: %s of load\n", absl::FormatDuration(r.elapsed));
  absl::StrAppendFormat(&out, "faults injected: %d worker SIGKILLs, %d runaways, %d os._exit\n",
                        r.kills, r.runaways, r.exits);
  absl::StrAppendFormat(&out, "calls answered: %d (ok %d)\n", r.answered, r.ok);
  int64_t expected = 0;
  for (const auto& [k, v] : r.expected) expected += v;
  absl::StrAppendFormat(&out, "expected failures: %d\n", expected);
  for (const auto& [k, v] : r.expected) absl::StrAppendFormat(&out, "  %s: %d\n", k, v);
  absl::StrAppendFormat(&out, "unexpected failures: %d\n", r.unexpected_total());
  for (const auto& [k, v] : r.unexpected) absl::StrAppendFormat(&out, "  %s: %d\n", k, v);
  for (const std::string& e : r.unexpected_examples) {
    absl::StrAppendFormat(&out, "  e.g. %s\n", e);
  }
  absl::StrAppendFormat(&out, "hangs (deadline + margin exceeded): %d\n", r.hangs);
  absl::StrAppendFormat(&out, "latency of ok calls: p50 %s p99 %s max %s\n",
                        FormatMicros(r.latency.p50), FormatMicros(r.latency.p99),
                        FormatMicros(r.latency.max));
  absl::StrAppendFormat(&out, "server at start: %s\n", FormatSnapshot(r.start));
  absl::StrAppendFormat(&out, "server at end:   %s\n", FormatSnapshot(r.end));
  return out;
}

}  // namespace bench
}  // namespace pyexec
