#include "bench/thread_costs.h"

#include <dirent.h>

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/procfs.h"

namespace pyexec {
namespace bench {
namespace {

std::string Name(const std::string& comm_path) {
  return std::string(absl::StripAsciiWhitespace(ReadProcFile(comm_path)));
}

int64_t StatusField(const std::string& status, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::ConsumePrefix(&line, key)) {
      int64_t n = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &n)) return n;
    }
  }
  return 0;
}

}  // namespace

ThreadCosts ReadThreadCosts(pid_t pid) {
  ThreadCosts costs;
  std::vector<pid_t> todo = {pid};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    const std::string process = Name(absl::StrCat("/proc/", p, "/comm"));
    const std::string task_dir = absl::StrCat("/proc/", p, "/task");
    if (DIR* dir = opendir(task_dir.c_str())) {
      while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        const std::string task = absl::StrCat(task_dir, "/", entry->d_name);
        ThreadCost& cost = costs[absl::StrCat(process, "/", Name(task + "/comm"))];
        // schedstat: time on the CPU (ns), time waiting to run, timeslices.
        std::vector<std::string> sched = absl::StrSplit(ReadProcFile(task + "/schedstat"), ' ');
        int64_t ns = 0;
        if (!sched.empty() && absl::SimpleAtoi(sched[0], &ns)) cost.cpu += absl::Nanoseconds(ns);
        const std::string status = ReadProcFile(task + "/status");
        cost.voluntary += StatusField(status, "voluntary_ctxt_switches:");
        cost.involuntary += StatusField(status, "nonvoluntary_ctxt_switches:");
      }
      closedir(dir);
    }
    for (pid_t child : ChildPids(p)) todo.push_back(child);
  }
  return costs;
}

std::string FormatThreadCosts(const ThreadCosts& before, const ThreadCosts& after,
                              int64_t calls) {
  if (calls <= 0) return "";
  struct Row {
    std::string name;
    ThreadCost per_call;
  };
  std::vector<Row> rows;
  for (const auto& [name, a] : after) {
    ThreadCost b;
    if (auto it = before.find(name); it != before.end()) b = it->second;
    ThreadCost d{(a.cpu - b.cpu) / calls, a.voluntary - b.voluntary,
                 a.involuntary - b.involuntary};
    // Threads born during the phase count from zero; ones that died are
    // gone from `after` (workers that exited), so this under-reports them.
    if (d.cpu <= absl::ZeroDuration() && d.voluntary <= 0 && d.involuntary <= 0) continue;
    rows.push_back({name, d});
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& x, const Row& y) { return x.per_call.cpu > y.per_call.cpu; });
  std::string out;
  static constexpr char row[] = "  %-36s %10s %12s %12s\n";
  absl::StrAppendFormat(&out, row, "thread (process/name)", "CPU/call", "vol sw/call",
                        "invol sw/call");
  for (const Row& r : rows) {
    absl::StrAppendFormat(&out, row, r.name,
                          absl::StrFormat("%.1f us", absl::ToDoubleMicroseconds(r.per_call.cpu)),
                          absl::StrFormat("%.2f", static_cast<double>(r.per_call.voluntary) / calls),
                          absl::StrFormat("%.2f", static_cast<double>(r.per_call.involuntary) / calls));
  }
  return out;
}

}  // namespace bench
}  // namespace pyexec
