#include "context_pool/orphan_reaper.h"

#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pyexec {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Children of every thread of this process: a re-parented orphan is
// attached to whichever thread the kernel picked.
std::vector<pid_t> OwnChildren() {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return out;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string text =
        ReadFile(absl::StrCat("/proc/self/task/", entry->d_name, "/children"));
    for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
      pid_t pid = 0;
      if (absl::SimpleAtoi(word, &pid)) out.push_back(pid);
    }
  }
  closedir(dir);
  return out;
}

// A zombie that is not a process group leader.
bool IsOrphanZombie(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  // After the command: state, ppid, pgrp, ...
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ', absl::SkipEmpty());
  pid_t pgrp = 0;
  return f.size() > 2 && f[0] == "Z" && absl::SimpleAtoi(f[2], &pgrp) && pgrp != pid;
}

}  // namespace

int ReapOrphanedChildren() {
  int reaped = 0;
  for (pid_t pid : OwnChildren()) {
    if (!IsOrphanZombie(pid)) continue;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) ++reaped;
  }
  return reaped;
}

}  // namespace pyexec
