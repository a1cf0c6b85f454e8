#include "bench/load.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/notification.h"

namespace pyexec {
namespace bench {
namespace {

// What one caller saw while measuring.
struct CallerTally {
  std::vector<absl::Duration> samples;
  std::map<std::string, int64_t> errors;

  // A measured call: its latency if it succeeded, else its status code.
  void Record(const absl::Status& status, absl::Duration latency) {
    if (status.ok()) {
      samples.push_back(latency);
    } else {
      ++errors[absl::StatusCodeToString(status.code())];
    }
  }
};

}  // namespace

PhaseResult RunPhase(const std::vector<CallFn>& calls,
                     const PhaseOptions& options) {
  const size_t n = calls.size();
  std::vector<CallerTally> tallies(n);
  // Callers and this thread meet after their own warmups, then measure until
  // `stop`; the shared start keeps every caller inside the same window.
  absl::Barrier* start = new absl::Barrier(static_cast<int>(n) + 1);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const absl::Time warm_until = absl::Now() + options.warmup;
      while (absl::Now() < warm_until) (void)calls[i]();
      if (start->Block()) delete start;
      CallerTally& tally = tallies[i];
      while (!stop.load(std::memory_order_relaxed)) {
        const absl::Time t0 = absl::Now();
        absl::Status status = calls[i]();
        const absl::Duration latency = absl::Now() - t0;
        if (stop.load(std::memory_order_relaxed)) break;  // Past the window.
        tally.Record(status, latency);
      }
    });
  }
  if (start->Block()) delete start;
  if (options.on_measure_begin) options.on_measure_begin();
  const absl::Time t0 = absl::Now();
  absl::SleepFor(options.duration);
  stop.store(true);
  const absl::Duration elapsed = absl::Now() - t0;
  if (options.on_measure_end) options.on_measure_end();
  for (std::thread& t : threads) t.join();

  PhaseResult result;
  result.elapsed = elapsed;
  std::vector<absl::Duration> all;
  for (CallerTally& tally : tallies) {
    all.insert(all.end(), tally.samples.begin(), tally.samples.end());
    for (const auto& [code, count] : tally.errors) result.errors[code] += count;
  }
  result.ok = static_cast<int64_t>(all.size());
  result.latency = Summarize(all);
  result.throughput =
      static_cast<double>(result.ok) / absl::ToDoubleSeconds(elapsed);
  return result;
}

std::vector<PhaseResult> RunInterleaved(const std::vector<CallFn>& variants,
                                        const PhaseOptions& options) {
  const size_t n = variants.size();
  std::vector<CallerTally> tallies(n);
  const absl::Time warm_until = absl::Now() + options.warmup;
  while (absl::Now() < warm_until) {
    for (const CallFn& call : variants) (void)call();
  }
  if (options.on_measure_begin) options.on_measure_begin();
  const absl::Time t0 = absl::Now();
  const absl::Time until = t0 + options.duration;
  // Whole rounds only, so every variant gets the same number of calls, each
  // round in a new order: a call runs faster right after another on the same
  // server (its threads and caches are warm), and a fixed order would hand
  // that to the same variant every time.
  std::vector<size_t> round(n);
  for (size_t i = 0; i < n; ++i) round[i] = i;
  std::mt19937 shuffle(0x5eed);
  while (n > 0 && absl::Now() < until) {
    std::shuffle(round.begin(), round.end(), shuffle);
    for (size_t i : round) {
      const absl::Time c0 = absl::Now();
      absl::Status status = variants[i]();
      tallies[i].Record(status, absl::Now() - c0);
    }
  }
  const absl::Duration elapsed = absl::Now() - t0;
  if (options.on_measure_end) options.on_measure_end();

  std::vector<PhaseResult> results(n);
  for (size_t i = 0; i < n; ++i) {
    PhaseResult& r = results[i];
    r.elapsed = elapsed;
    r.errors = std::move(tallies[i].errors);
    r.ok = static_cast<int64_t>(tallies[i].samples.size());
    absl::Duration busy;
    for (absl::Duration d : tallies[i].samples) busy += d;
    r.latency = Summarize(tallies[i].samples);
    if (busy > absl::ZeroDuration()) {
      r.throughput = static_cast<double>(r.ok) / absl::ToDoubleSeconds(busy);
    }
  }
  return results;
}

void AppendPhaseErrors(
    const std::vector<std::pair<const char*, const PhaseResult*>>& phases,
    std::string* out) {
  for (const auto& [name, phase] : phases) {
    for (const auto& [code, count] : phase->errors) {
      absl::StrAppendFormat(out, "errors in %s: %s x%d\n", name, code, count);
    }
  }
}

}  // namespace bench
}  // namespace pyexec
