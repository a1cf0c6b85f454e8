#include "bench/sessions.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/compare.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "common/procfs.h"

namespace pyexec {
namespace bench {
namespace {

std::string CodeName(const absl::Status& s) {
  return absl::StatusCodeToString(s.code());
}

// pyexecd's zygotes among its children (one, or none with spawn; a worker
// just forked carries the zygote's name for an instant).
std::vector<pid_t> ZygotePids(pid_t server) {
  std::vector<pid_t> zygotes;
  for (pid_t child : ChildPids(server)) {
    if (absl::StartsWith(ReadProcFile(absl::StrCat("/proc/", child, "/comm")),
                         "pyexec_zygote")) {
      zygotes.push_back(child);
    }
  }
  return zygotes;
}

// CPU time so far of pyexecd (with the workers it reaped) and its zygote.
absl::Duration ServerCpuTime(pid_t server) {
  absl::Duration total = ProcessTreeCpuTime(server).value_or(absl::ZeroDuration());
  for (pid_t zygote : ZygotePids(server)) {
    total += ProcessTreeCpuTime(zygote).value_or(absl::ZeroDuration());
  }
  return total;
}

}  // namespace

SmapsRollup ParseSmapsRollup(const std::string& text) {
  SmapsRollup m;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 2) continue;
    int64_t kb = 0;
    if (!absl::SimpleAtoi(f[1], &kb)) continue;
    if (f[0] == "Rss:") m.rss_kb = kb;
    if (f[0] == "Pss:") m.pss_kb = kb;
    if (f[0] == "Private_Clean:" || f[0] == "Private_Dirty:") m.private_kb += kb;
    if (f[0] == "Anonymous:") m.anonymous_kb = kb;
  }
  return m;
}

ChurnResult RunChurn(const std::string& address, const ChurnOptions& options) {
  const absl::Time start = absl::Now();
  const absl::Time measure_from = start + options.warmup;
  const absl::Time end = measure_from + options.duration;
  absl::Mutex mu;
  std::vector<absl::Duration> binds;
  ChurnResult result;
  std::vector<std::thread> threads;
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back([&] {
      Client client(MakeChannel(address, /*own_connection=*/true));
      const CallOptions call{options.call_timeout};
      std::vector<absl::Duration> mine;
      int64_t ok = 0;
      std::map<std::string, int64_t> errors;
      while (true) {
        const absl::Time t0 = absl::Now();
        if (t0 >= end) break;
        const bool measured = t0 >= measure_from;
        absl::StatusOr<BindResult> bound = client.Bind(absl::ZeroDuration(), call);
        const absl::Duration bind_time = absl::Now() - t0;
        absl::Status status = bound.status();
        if (bound.ok()) {
          absl::StatusOr<Result> r = client.Eval(bound->session, "1+1", {}, call);
          if (!r.ok()) status = r.status();
          absl::Status u = client.Unbind(bound->session, call);
          if (status.ok()) status = u;
        }
        if (!measured) continue;
        if (status.ok()) {
          ++ok;
          mine.push_back(bind_time);
        } else {
          ++errors[CodeName(status)];
          // Do not spin on a refusal (e.g. no_workers_available).
          absl::SleepFor(absl::Milliseconds(1));
        }
      }
      absl::MutexLock lock(&mu);
      binds.insert(binds.end(), mine.begin(), mine.end());
      result.ok += ok;
      for (const auto& [k, v] : errors) result.errors[k] += v;
    });
  }
  // CPU time over the measured window (workers alive at its edges blur it
  // by a few sessions' worth).
  absl::SleepFor(measure_from - absl::Now());
  const absl::Duration server0 =
      options.server_pid > 0 ? ServerCpuTime(options.server_pid) : absl::ZeroDuration();
  const absl::Duration machine0 = MachineBusyTime().value_or(absl::ZeroDuration());
  absl::SleepFor(end - absl::Now());
  const absl::Duration server1 =
      options.server_pid > 0 ? ServerCpuTime(options.server_pid) : absl::ZeroDuration();
  const absl::Duration machine1 = MachineBusyTime().value_or(absl::ZeroDuration());
  for (std::thread& t : threads) t.join();
  result.bind = Summarize(binds);
  result.rate = static_cast<double>(result.ok) / absl::ToDoubleSeconds(options.duration);
  if (result.ok > 0) {
    result.server_cpu_per_session = (server1 - server0) / result.ok;
    result.machine_cpu_per_session = (machine1 - machine0) / result.ok;
  }
  return result;
}

DensityResult RunDensity(const std::string& address, pid_t server_pid,
                         const DensityOptions& options) {
  DensityResult result;
  absl::Mutex mu;
  std::vector<std::string> sessions;
  std::vector<pid_t> pids;
  std::atomic<int> next{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back([&] {
      Client client(MakeChannel(address, /*own_connection=*/true));
      const CallOptions call{options.call_timeout};
      while (next.fetch_add(1) < options.sessions) {
        absl::StatusOr<BindResult> bound = client.Bind(absl::ZeroDuration(), call);
        absl::StatusOr<Result> r =
            bound.ok() ? client.Eval(bound->session, "__import__('os').getpid()", {}, call)
                       : absl::StatusOr<Result>(bound.status());
        absl::MutexLock lock(&mu);
        if (bound.ok()) sessions.push_back(bound->session);
        if (!r.ok() || !r->ok()) {
          if (result.error.empty()) {
            result.error = r.ok() ? r->error->message() : r.status().ToString();
          }
          continue;
        }
        pids.push_back(static_cast<pid_t>(r->value.int_()));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  result.bind_all = absl::Now() - start;
  result.bound = static_cast<int>(pids.size());

  int64_t uss_sum = 0, rss_sum = 0, pss_sum = 0;
  for (pid_t pid : pids) {
    SmapsRollup m = ParseSmapsRollup(ReadProcFile(absl::StrCat("/proc/", pid, "/smaps_rollup")));
    uss_sum += m.private_kb;
    rss_sum += m.rss_kb;
    pss_sum += m.pss_kb;
    result.uss_max_mib = std::max(result.uss_max_mib, m.private_kb / 1024.0);
  }
  for (pid_t child : ZygotePids(server_pid)) {
    SmapsRollup zygote =
        ParseSmapsRollup(ReadProcFile(absl::StrCat("/proc/", child, "/smaps_rollup")));
    pss_sum += zygote.pss_kb;
    result.zygote_anonymous_mib = zygote.anonymous_kb / 1024.0;
  }
  if (!pids.empty()) {
    result.uss_mean_mib = uss_sum / 1024.0 / pids.size();
    result.rss_mean_mib = rss_sum / 1024.0 / pids.size();
  }
  result.pss_total_mib = pss_sum / 1024.0;

  // Unbind everything, in parallel.
  std::atomic<size_t> at{0};
  threads.clear();
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back([&] {
      Client client(MakeChannel(address, /*own_connection=*/true));
      for (size_t i = at.fetch_add(1); i < sessions.size(); i = at.fetch_add(1)) {
        client.Unbind(sessions[i], CallOptions{options.call_timeout}).IgnoreError();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return result;
}

}  // namespace bench
}  // namespace pyexec
