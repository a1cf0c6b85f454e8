#include "context_pool/worker_environment.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace pyexec {
namespace {

bool IsName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name[0])) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> CurrentEnvironment() {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) out.emplace_back(*e);
  return out;
}

absl::StatusOr<std::vector<std::string>> BuildWorkerEnvironment(
    const std::vector<std::string>& parent, const std::vector<std::string>& passthrough,
    const std::vector<std::string>& extra) {
  std::map<std::string, std::string> parent_vars;
  for (const std::string& entry : parent) {
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    parent_vars.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  std::map<std::string, std::string> env;
  env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  auto lang = parent_vars.find("LANG");
  env["LANG"] = lang != parent_vars.end() ? lang->second : "C.UTF-8";
  for (const auto& [name, value] : parent_vars) {
    if (absl::StartsWith(name, "PYTHON")) env[name] = value;
  }
  auto reserved = [](absl::string_view name) { return name == "HOME" || name == "TMPDIR"; };
  for (const std::string& name : passthrough) {
    if (!IsName(name) || reserved(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker_env_passthrough: ", name,
          reserved(name) ? " is each worker's private directory"
                         : " is not a variable name"));
    }
    auto found = parent_vars.find(name);
    if (found != parent_vars.end()) env[name] = found->second;
  }
  for (const std::string& pair : extra) {
    size_t eq = pair.find('=');
    std::string name = pair.substr(0, eq);
    if (eq == std::string::npos || !IsName(name) || reserved(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker_env: \"", pair, "\" ",
          reserved(name) ? "sets each worker's private directory"
                         : "is not NAME=VALUE"));
    }
    env[name] = pair.substr(eq + 1);
  }
  std::vector<std::string> out;
  for (const auto& [name, value] : env) out.push_back(absl::StrCat(name, "=", value));
  return out;
}

}  // namespace pyexec
