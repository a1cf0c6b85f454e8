// pyexec_bench: compares pyexec Eval with a bare gRPC echo (--mode=compare,
// the default) or soaks pyexecd under mixed load with injected faults
// (--mode=soak), or measures the scale-out hop (--mode=hop: two replicas
// with --peers; Eval on sessions of one, directly and through the other).
// Starts pyexecd and the echo server as child processes unless
// --pyexec_addr / --echo_addr point at running ones.
//
// Exit status: 0 when the run completed (a MISS against a target does not
// fail it); 1 when a server could not be started or reached, or when a soak
// saw unexpected failures or hangs; 64 for bad flags.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "bench/compare.h"
#include "bench/hop.h"
#include "bench/process.h"
#include "bench/process_floor.h"
#include "bench/scale.h"
#include "bench/sessions.h"
#include "bench/soak.h"
#include "clients/cpp/client.h"

ABSL_FLAG(std::string, mode, "compare", "compare | soak | hop | sessions | scale");
ABSL_FLAG(std::vector<std::string>, scale_steps,
          std::vector<std::string>({"100", "1000", "2000", "4000", "10000"}),
          "scale: bound sessions at each step");
ABSL_FLAG(std::string, pyexecd, "",
          "pyexecd binary to start; default: $PYEXECD, else bazel-bin's "
          "server/pyexecd found next to this binary or in the workspace");
ABSL_FLAG(std::string, pyexec_addr, "",
          "use a running pyexecd at HOST:PORT instead of starting one");
ABSL_FLAG(int, pyexecd_pid, 0,
          "pid of the running pyexecd given by --pyexec_addr, for soak kills "
          "and /proc figures");
ABSL_FLAG(std::vector<std::string>, pyexecd_args, {},
          "extra comma-separated arguments for the started pyexecd");
ABSL_FLAG(std::string, echo_server, "",
          "echo server binary to start; default: echo_server_main next to "
          "this binary");
ABSL_FLAG(std::string, echo_addr, "",
          "use a running echo server at HOST:PORT instead of starting one");
ABSL_FLAG(int, workers, 0,
          "pyexecd --workers; 0 means concurrency + 1 (compare) or 4 (soak)");
ABSL_FLAG(int, max_workers, 16, "pyexecd --max_workers");
ABSL_FLAG(std::string, server_log, "",
          "file for the started servers' stderr; default "
          "/tmp/pyexec_bench.<pid>.log");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "compare: warmup per phase");
ABSL_FLAG(int, traced_calls, 2000,
          "compare: traced Evals for the stage breakdown after the phases; 0 for "
          "none (a pyexecd older than the per-call trace)");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "compare: measured time per phase (default 5s); soak: total time "
          "(default 300s)");
ABSL_FLAG(int, concurrency, 8, "compare: concurrent clients for throughput");
ABSL_FLAG(bool, shared_channel, false,
          "compare: all concurrent clients share one channel (one HTTP/2 "
          "connection) instead of one channel each");
ABSL_FLAG(int, echo_payload_bytes, 48, "compare: echo payload size");
ABSL_FLAG(bool, relay_floor, true,
          "compare: also measure echo relayed through helper processes (a second "
          "echo server with --relay_helpers), the floor of a call run in another "
          "process; not with --echo_addr");
ABSL_FLAG(int, bound_threads, 3, "soak: threads with bound sessions");
ABSL_FLAG(int, stateless_threads, 3, "soak: threads of stateless calls");
ABSL_FLAG(absl::Duration, kill_interval, absl::Seconds(1),
          "soak: time between worker SIGKILLs; 0 disables");
ABSL_FLAG(double, runaway_probability, 0.01,
          "soak: chance per call of a `while True: pass` runaway");
ABSL_FLAG(absl::Duration, runaway_timeout, absl::Milliseconds(300),
          "soak: deadline of runaway calls");
ABSL_FLAG(double, exit_probability, 0.005,
          "soak: chance per bound-session call of os._exit");
ABSL_FLAG(uint64_t, seed, 1, "soak: random seed");

ABSL_FLAG(int, churn_threads, 4, "sessions: client threads of the churn run");
ABSL_FLAG(int, sessions, 1000,
          "sessions: sessions held at once by the zygote density runs");
ABSL_FLAG(int, spawn_sessions, 200,
          "sessions: sessions held at once by the posix_spawn density run "
          "(each spawn costs a whole CPython start)");
ABSL_FLAG(std::string, preload_modules, "json,decimal,fractions,datetime,re,collections",
          "sessions: --preload of the third density run (empty skips it)");

namespace {

using pyexec::bench::ServerProcess;

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? Dirname(std::string(buf, n)) : ".";
}

// The first executable among `candidates`, or "".
std::string FirstExecutable(const std::vector<std::string>& candidates) {
  for (const std::string& c : candidates) {
    if (!c.empty() && access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string FindPyexecd() {
  if (!absl::GetFlag(FLAGS_pyexecd).empty()) return absl::GetFlag(FLAGS_pyexecd);
  if (!Env("PYEXECD").empty()) return Env("PYEXECD");
  std::vector<std::string> candidates = {SelfDir() + "/../server/pyexecd"};
  if (!Env("BUILD_WORKSPACE_DIRECTORY").empty()) {
    candidates.push_back(Env("BUILD_WORKSPACE_DIRECTORY") + "/bazel-bin/server/pyexecd");
  }
  candidates.push_back("bazel-bin/server/pyexecd");
  const std::string found = FirstExecutable(candidates);
  return found.empty() ? candidates[0] : found;
}

std::string FindEchoServer() {
  if (!absl::GetFlag(FLAGS_echo_server).empty()) {
    return absl::GetFlag(FLAGS_echo_server);
  }
  return SelfDir() + "/echo_server_main";
}

// Waits until the pool has `workers` available workers (warm) or `timeout`.
bool WaitWarm(const pyexec::Client& client, int workers, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::StatusOr<pyexec::v1::GetStatsResponse> stats =
        client.GetStats(pyexec::CallOptions{absl::Seconds(2)});
    if (stats.ok() && stats->available_workers() >= static_cast<uint32_t>(workers)) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

// A loopback port that was free a moment ago: replicas must know each
// other's ports before they start.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// --mode=hop: two replicas that name each other in --peers; sessions bound
// on the first, called directly and through the second.
int RunHopMode(int workers, const std::string& log_path) {
  const std::string a = absl::StrCat("127.0.0.1:", FreePort());
  const std::string b = absl::StrCat("127.0.0.1:", FreePort());
  const std::string peers = absl::StrCat("--peers=", a, ",", b);
  std::vector<std::unique_ptr<ServerProcess>> replicas;
  for (const std::string& listen : {a, b}) {
    std::vector<std::string> args = {
        FindPyexecd(), absl::StrCat("--listen=", listen), peers,
        absl::StrCat("--workers=", workers),
        absl::StrCat("--max_workers=", std::max(absl::GetFlag(FLAGS_max_workers), workers))};
    for (const std::string& extra : absl::GetFlag(FLAGS_pyexecd_args)) args.push_back(extra);
    std::cout << "starting " << absl::StrJoin(args, " ") << " (stderr -> "
              << log_path << ")" << std::endl;
    auto started = ServerProcess::Start(args, log_path, absl::Seconds(60));
    if (!started.ok()) {
      std::cerr << "pyexec_bench: " << started.status() << "\n";
      return 1;
    }
    pyexec::Client client(pyexec::bench::MakeChannel((*started)->address(), false));
    if (!WaitWarm(client, workers, absl::Seconds(60))) {
      std::cerr << "pyexec_bench: " << listen << " did not warm up\n";
      return 1;
    }
    replicas.push_back(*std::move(started));
  }
  pyexec::bench::HopOptions options;
  options.phase.warmup = absl::GetFlag(FLAGS_warmup);
  const absl::Duration d = absl::GetFlag(FLAGS_duration);
  if (d > absl::ZeroDuration()) options.phase.duration = d;
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  std::cout << "owner " << a << ", forwarder " << b
            << "; 1 client making direct, forwarded and client-routed calls in turn, then "
            << options.concurrency << " clients (a channel each) for each way; phases of "
            << absl::FormatDuration(options.phase.warmup) << " warmup + "
            << absl::FormatDuration(options.phase.duration) << std::endl;
  absl::StatusOr<pyexec::bench::HopReport> report =
      pyexec::bench::RunHop(a, b, options);
  if (!report.ok()) {
    std::cerr << "pyexec_bench: " << report.status() << "\n";
    return 1;
  }
  std::cout << pyexec::bench::FormatHopTable(*report, options);
  return 0;
}

// One pyexecd configuration measured by --mode=sessions.
struct SessionsRun {
  std::string name;
  std::vector<std::string> args;  // launcher and preload flags
  bool churn = true;
  int sessions = 0;
  pyexec::bench::ChurnResult churn_result;
  pyexec::bench::DensityResult density;
};

std::string Mib(double v) { return absl::StrFormat("%.2f MiB", v); }

// Where the CPU of one session goes under churn, against the floor that any
// process per session costs on this machine: why churn stops where it does.
void PrintChurnCpu(const SessionsRun& z) {
  const auto& c = z.churn_result;
  if (c.machine_cpu_per_session <= absl::ZeroDuration()) return;
  const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::cout << absl::StrFormat(
      "CPU per session under churn (%s): %s for pyexecd, zygote and worker; %s for the "
      "machine (these clients included): at most %.0f/s on %d cores\n",
      z.name, pyexec::bench::FormatMicros(c.server_cpu_per_session),
      pyexec::bench::FormatMicros(c.machine_cpu_per_session),
      cores / absl::ToDoubleSeconds(c.machine_cpu_per_session), cores);
  pyexec::bench::ProcessFloorOptions floor;
  floor.helper_binary = SelfDir() + "/process_floor_helper";
  floor.resident_bytes =
      std::max<int64_t>(1 << 20, static_cast<int64_t>(z.density.zygote_anonymous_mib * (1 << 20)));
  floor.dirtied_bytes = static_cast<int64_t>(z.density.uss_mean_mib * (1 << 20));
  absl::StatusOr<absl::Duration> cost = pyexec::bench::MeasureProcessFloor(floor);
  if (!cost.ok()) {
    std::cout << "process floor: " << cost.status() << "\n";
    return;
  }
  std::cout << absl::StrFormat(
      "process floor here: fork of %s resident, %s dirtied, exit and reap: %s CPU "
      "(%.0f%% of the server's per session; alone it allows %.0f/s on %d cores)\n",
      Mib(floor.resident_bytes / double{1 << 20}), Mib(floor.dirtied_bytes / double{1 << 20}),
      pyexec::bench::FormatMicros(*cost),
      100 * absl::FDivDuration(*cost, c.server_cpu_per_session),
      cores / absl::ToDoubleSeconds(*cost), cores);
}

// What the latency target leaves for the hop to a worker process, against what
// that hop costs on this machine: why Eval stays above echo where it does.
void PrintHopFloor(const pyexec::bench::CompareReport& report,
                   const pyexec::bench::CompareOptions& options) {
  absl::StatusOr<absl::Duration> hop =
      pyexec::bench::MeasureProcessHop(SelfDir() + "/process_floor_helper");
  if (!hop.ok()) {
    std::cout << "process hop: " << hop.status() << "\n";
    return;
  }
  const absl::Duration echo = report.echo_latency.latency.p50;
  const absl::Duration eval = report.eval_latency.latency.p50;
  const absl::Duration allowed = echo * (options.latency_target - 1);
  std::cout << absl::StrFormat(
      "process hop floor here: a 64-byte round trip to another process (Unix socket, "
      "blocking reads), p50 %s. Eval adds %s to echo; the %.2fx target allows %s, so "
      "the hop alone is %.0f%% of it (Eval at echo + hop would be %.2fx)\n",
      pyexec::bench::FormatMicros(*hop), pyexec::bench::FormatMicros(eval - echo),
      options.latency_target, pyexec::bench::FormatMicros(allowed),
      100 * absl::FDivDuration(*hop, allowed),
      absl::FDivDuration(echo + *hop, echo));
}

// --mode=sessions: churn and density against the zygote and the posix_spawn
// launcher (and the zygote with preloads), each on its own pyexecd.
// --mode=scale: sessions bound in steps up to 10,000 on one replica, one
// more probed at each step (bench/scale.h).
int RunScaleMode(const std::string& log_path) {
  pyexec::bench::ScaleOptions options;
  options.steps.clear();
  for (const std::string& step : absl::GetFlag(FLAGS_scale_steps)) {
    int n = 0;
    if (!absl::SimpleAtoi(step, &n) || n <= 0 ||
        (!options.steps.empty() && n <= options.steps.back())) {
      std::cerr << "pyexec_bench: --scale_steps must be ascending positive counts\n";
      return 64;
    }
    options.steps.push_back(n);
  }
  if (options.steps.empty()) return 64;
  std::vector<std::string> args = {FindPyexecd(), "--listen=127.0.0.1:0", "--workers=4",
                                   absl::StrCat("--max_workers=", options.steps.back() + 200)};
  for (const std::string& a : absl::GetFlag(FLAGS_pyexecd_args)) args.push_back(a);
  std::cout << "starting " << absl::StrJoin(args, " ") << std::endl;
  auto started = ServerProcess::Start(args, log_path, absl::Seconds(120));
  if (!started.ok()) {
    std::cerr << "pyexec_bench: " << started.status() << "\n";
    return 1;
  }
  std::vector<pyexec::bench::ScaleStep> steps =
      pyexec::bench::RunScale((*started)->address(), (*started)->pid(), options);
  std::cout << pyexec::bench::FormatScaleTable(steps);
  return steps.size() == options.steps.size() && steps.back().error.empty() ? 0 : 1;
}

int RunSessionsMode(const std::string& log_path) {
  const int n = absl::GetFlag(FLAGS_sessions);
  std::vector<SessionsRun> runs = {
      {"zygote", {"--launcher=zygote"}, true, n},
      {"spawn", {"--launcher=spawn"}, true, absl::GetFlag(FLAGS_spawn_sessions)},
      // The same zygote without each worker's Landlock domain: what that
      // layer costs a Bind and the churn, in this run.
      {"zygote-nolandlock", {"--launcher=zygote", "--worker_landlock=false"}, true,
       std::min(n, 100)},
  };
  const std::string preload = absl::GetFlag(FLAGS_preload_modules);
  if (!preload.empty()) {
    runs.push_back({"zygote+preload", {"--launcher=zygote", "--preload=" + preload},
                    false, n});
  }
  pyexec::bench::ChurnOptions churn;
  churn.threads = absl::GetFlag(FLAGS_churn_threads);
  churn.warmup = absl::GetFlag(FLAGS_warmup);
  const absl::Duration d = absl::GetFlag(FLAGS_duration);
  if (d > absl::ZeroDuration()) churn.duration = d;
  for (SessionsRun& run : runs) {
    std::vector<std::string> args = {
        FindPyexecd(), "--listen=127.0.0.1:0", "--workers=4",
        absl::StrCat("--max_workers=", std::max(run.sessions, 16) + 8)};
    args.insert(args.end(), run.args.begin(), run.args.end());
    for (const std::string& a : absl::GetFlag(FLAGS_pyexecd_args)) args.push_back(a);
    std::cout << "starting " << absl::StrJoin(args, " ") << std::endl;
    auto started = ServerProcess::Start(args, log_path, absl::Seconds(120));
    if (!started.ok()) {
      std::cerr << "pyexec_bench: " << started.status() << "\n";
      return 1;
    }
    pyexec::Client client(pyexec::bench::MakeChannel((*started)->address(), false));
    if (!WaitWarm(client, 4, absl::Seconds(60))) {
      std::cerr << "pyexec_bench: pool did not warm up\n";
      return 1;
    }
    if (run.churn) {
      std::cout << "  churn: " << churn.threads << " threads x Bind->Eval->Unbind for "
                << absl::FormatDuration(churn.duration) << std::endl;
      churn.server_pid = (*started)->pid();
      run.churn_result = pyexec::bench::RunChurn((*started)->address(), churn);
    }
    std::cout << "  density: binding " << run.sessions << " sessions" << std::endl;
    pyexec::bench::DensityOptions density;
    density.sessions = run.sessions;
    run.density = pyexec::bench::RunDensity((*started)->address(), (*started)->pid(),
                                            density);
    std::cout << "  pyexecd stopped: " << (*started)->Stop() << std::endl;
  }

  std::cout << "\n" << absl::StrFormat("%-15s %9s %10s %10s %7s %9s %10s %10s %10s %11s\n",
                                        "launcher", "churn/s", "Bind p50", "Bind p99",
                                        "bound", "bind all", "USS/sess", "USS max",
                                        "RSS/sess", "PSS total");
  for (const SessionsRun& run : runs) {
    const auto& c = run.churn_result;
    const auto& m = run.density;
    std::cout << absl::StrFormat(
        "%-15s %9s %10s %10s %7d %9s %10s %10s %10s %11s\n", run.name,
        run.churn ? absl::StrFormat("%.0f", c.rate) : "-",
        run.churn ? pyexec::bench::FormatMicros(c.bind.p50) : "-",
        run.churn ? pyexec::bench::FormatMicros(c.bind.p99) : "-", m.bound,
        absl::FormatDuration(absl::Trunc(m.bind_all, absl::Milliseconds(1))),
        Mib(m.uss_mean_mib), Mib(m.uss_max_mib), Mib(m.rss_mean_mib),
        Mib(m.pss_total_mib));
    for (const auto& [code, count] : c.errors) {
      std::cout << "    churn errors " << code << ": " << count << "\n";
    }
    if (!m.error.empty()) std::cout << "    density error: " << m.error << "\n";
  }
  const SessionsRun& z = runs[0];
  const SessionsRun& s = runs[1];
  auto verdict = [](bool ok) { return ok ? "PASS" : "MISS"; };
  std::cout << "\n";
  if (s.churn_result.rate > 0) {
    std::cout << absl::StrFormat("churn zygote/spawn: %.1fx\n", z.churn_result.rate / s.churn_result.rate);
  }
  if (z.churn_result.bind.p50 > absl::ZeroDuration()) {
    std::cout << absl::StrFormat("Bind p50 spawn/zygote: %.1fx\n",
                                 absl::FDivDuration(s.churn_result.bind.p50, z.churn_result.bind.p50));
  }
  if (z.density.uss_mean_mib > 0) {
    std::cout << absl::StrFormat("USS per session spawn/zygote: %.1fx\n",
                                 s.density.uss_mean_mib / z.density.uss_mean_mib);
  }
  const SessionsRun& plain = runs[2];
  if (plain.churn_result.rate > 0 && z.churn_result.rate > 0) {
    std::cout << absl::StrFormat(
        "Landlock domain per worker: churn %.0f/s with, %.0f/s without (%.2fx); Bind p50 "
        "%s with, %s without (%+.0f us)\n",
        z.churn_result.rate, plain.churn_result.rate,
        z.churn_result.rate / plain.churn_result.rate,
        pyexec::bench::FormatMicros(z.churn_result.bind.p50),
        pyexec::bench::FormatMicros(plain.churn_result.bind.p50),
        absl::ToDoubleMicroseconds(z.churn_result.bind.p50 - plain.churn_result.bind.p50));
  }
  PrintChurnCpu(z);
  std::cout << absl::StrFormat("target churn >= 1000/s with %d threads: %s (%.0f/s)\n",
                               churn.threads, verdict(z.churn_result.rate >= 1000), z.churn_result.rate);
  std::cout << absl::StrFormat("target Bind p50 <= 2 ms: %s (%s)\n",
                               verdict(z.churn_result.bind.p50 <= absl::Milliseconds(2)),
                               pyexec::bench::FormatMicros(z.churn_result.bind.p50));
  // Issue 9 asked for 3 MiB; issue 18 holds density to 1 MiB.
  std::cout << absl::StrFormat("target %d sessions at <= 1 MiB USS each: %s (%d bound, %s)\n",
                               n, verdict(z.density.bound >= n && z.density.uss_mean_mib <= 1.0),
                               z.density.bound, Mib(z.density.uss_mean_mib));
  if (runs.size() > 3) {
    const double delta = runs[3].density.uss_mean_mib - z.density.uss_mean_mib;
    std::cout << absl::StrFormat("target preload USS within 1 MiB: %s (%+.2f MiB)\n",
                                 verdict(runs[3].density.bound >= n && delta <= 1.0), delta);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil keeps absl::Mutex's deadlock detector on (see
  // server/main.cc); the clients here do not need it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "compare" && mode != "soak" && mode != "hop" && mode != "sessions" &&
      mode != "scale") {
    std::cerr << "pyexec_bench: --mode must be compare, soak, hop, sessions or scale\n";
    return 64;
  }
  const bool soak = mode == "soak";
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  int workers = absl::GetFlag(FLAGS_workers);
  if (workers <= 0) workers = soak ? 4 : concurrency + 1;
  std::string log_path = absl::GetFlag(FLAGS_server_log);
  if (log_path.empty()) log_path = absl::StrCat("/tmp/pyexec_bench.", getpid(), ".log");
  if (mode == "hop") return RunHopMode(workers, log_path);
  if (mode == "sessions") return RunSessionsMode(log_path);
  if (mode == "scale") return RunScaleMode(log_path);

  // pyexecd: started here unless given.
  std::unique_ptr<ServerProcess> pyexecd;
  std::string pyexec_addr = absl::GetFlag(FLAGS_pyexec_addr);
  pid_t server_pid = absl::GetFlag(FLAGS_pyexecd_pid);
  if (pyexec_addr.empty()) {
    std::vector<std::string> args = {
        FindPyexecd(), "--listen=127.0.0.1:0", absl::StrCat("--workers=", workers),
        absl::StrCat("--max_workers=", absl::GetFlag(FLAGS_max_workers))};
    for (const std::string& a : absl::GetFlag(FLAGS_pyexecd_args)) args.push_back(a);
    std::cout << "starting " << absl::StrJoin(args, " ") << " (stderr -> "
              << log_path << ")" << std::endl;
    auto started = ServerProcess::Start(args, log_path, absl::Seconds(60));
    if (!started.ok()) {
      std::cerr << "pyexec_bench: " << started.status()
                << "\n(build it with `bazel build //server:pyexecd "
                   "//worker:pyexec_worker`, or pass --pyexecd / $PYEXECD)\n";
      return 1;
    }
    pyexecd = *std::move(started);
    pyexec_addr = pyexecd->address();
    server_pid = pyexecd->pid();
  }
  pyexec::Client client(pyexec::bench::MakeChannel(pyexec_addr, false));
  if (!WaitWarm(client, pyexecd ? workers : 1, absl::Seconds(60))) {
    std::cerr << "pyexec_bench: pyexecd at " << pyexec_addr
              << " did not report a warm pool within 60s\n";
    return 1;
  }
  std::cout << "pyexecd at " << pyexec_addr << " (pid " << server_pid << ")"
            << std::endl;

  if (soak) {
    pyexec::bench::SoakOptions options;
    const absl::Duration d = absl::GetFlag(FLAGS_duration);
    if (d > absl::ZeroDuration()) options.duration = d;
    options.bound_threads = absl::GetFlag(FLAGS_bound_threads);
    options.stateless_threads = absl::GetFlag(FLAGS_stateless_threads);
    options.kill_interval = absl::GetFlag(FLAGS_kill_interval);
    options.runaway_probability = absl::GetFlag(FLAGS_runaway_probability);
    options.runaway_timeout = absl::GetFlag(FLAGS_runaway_timeout);
    options.exit_probability = absl::GetFlag(FLAGS_exit_probability);
    options.server_pid = server_pid;
    options.expected_workers = pyexecd ? workers : 0;
    options.seed = absl::GetFlag(FLAGS_seed);
    if (server_pid <= 0) {
      std::cout << "no pyexecd pid (--pyexecd_pid): no worker kills, no /proc "
                   "figures"
                << std::endl;
    }
    std::cout << "soaking for " << absl::FormatDuration(options.duration) << "..."
              << std::endl;
    pyexec::bench::SoakReport report = pyexec::bench::RunSoak(pyexec_addr, options);
    std::cout << pyexec::bench::FormatSoakReport(report);
    if (pyexecd) std::cout << "pyexecd stopped: " << pyexecd->Stop() << "\n";
    return report.unexpected_total() == 0 && report.hangs == 0 ? 0 : 1;
  }

  // The echo baseline runs as its own process, like pyexecd, so both sides
  // pay for the same process boundary and neither shares the bench's cores
  // through in-process threads.
  std::unique_ptr<ServerProcess> echo;
  std::string echo_addr = absl::GetFlag(FLAGS_echo_addr);
  if (echo_addr.empty()) {
    auto started = ServerProcess::Start({FindEchoServer(), "--listen=127.0.0.1:0"},
                                        log_path, absl::Seconds(30));
    if (!started.ok()) {
      std::cerr << "pyexec_bench: " << started.status() << "\n";
      return 1;
    }
    echo = *std::move(started);
    echo_addr = echo->address();
  }
  std::cout << "echo server at " << echo_addr << std::endl;
  std::unique_ptr<ServerProcess> relay;
  if (echo && absl::GetFlag(FLAGS_relay_floor)) {
    auto started = ServerProcess::Start(
        {FindEchoServer(), "--listen=127.0.0.1:0",
         absl::StrCat("--relay_helpers=", concurrency + 1)},
        log_path, absl::Seconds(30));
    if (!started.ok()) {
      std::cerr << "pyexec_bench: " << started.status() << "\n";
      return 1;
    }
    relay = *std::move(started);
    std::cout << "relay echo server at " << relay->address() << std::endl;
  }

  pyexec::bench::CompareOptions options;
  options.pyexec_pid = server_pid;
  options.echo_pid = echo ? echo->pid() : 0;
  options.relay_address = relay ? relay->address() : "";
  options.relay_pid = relay ? relay->pid() : 0;
  options.phase.warmup = absl::GetFlag(FLAGS_warmup);
  const absl::Duration d = absl::GetFlag(FLAGS_duration);
  if (d > absl::ZeroDuration()) options.phase.duration = d;
  options.concurrency = concurrency;
  options.shared_channel = absl::GetFlag(FLAGS_shared_channel);
  options.echo_payload_bytes = absl::GetFlag(FLAGS_echo_payload_bytes);
  options.traced_calls = absl::GetFlag(FLAGS_traced_calls);
  std::cout << "1 client calling echo, Eval" << (relay ? " and relay" : "")
            << " in turn, then each with "
            << concurrency << " clients; phases of "
            << absl::FormatDuration(options.phase.warmup) << " warmup + "
            << absl::FormatDuration(options.phase.duration) << "; the N clients with "
            << (options.shared_channel ? "one shared channel" : "a channel each")
            << std::endl;
  absl::StatusOr<pyexec::bench::CompareReport> report =
      pyexec::bench::RunCompare(pyexec_addr, echo_addr, options);
  if (!report.ok()) {
    std::cerr << "pyexec_bench: " << report.status() << "\n";
    return 1;
  }
  std::cout << pyexec::bench::FormatCompareTable(*report, options);
  PrintHopFloor(*report, options);
  return 0;
}
