#include "server/request_validation.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace pyexec {
namespace {

bool IsContainer(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kList:
    case v1::Value::kTuple:
    case v1::Value::kDict:
    case v1::Value::kSet:
      return true;
    default:
      return false;
  }
}

template <typename Map>
absl::Status ValidateMap(const Map& values, absl::string_view what, int max_depth) {
  for (const auto& [name, value] : values) {
    if (absl::Status s = ValidateValue(value, max_depth); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", name, "': ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateValue(const v1::Value& value, int max_depth) {
  // Iterative, so that the walk's own depth is never the input's.
  std::vector<std::pair<const v1::Value*, int>> pending = {{&value, 0}};
  while (!pending.empty()) {
    auto [v, depth] = pending.back();
    pending.pop_back();
    if (!IsContainer(*v)) {
      if (v->items_size() > 0 || v->keys_size() > 0) {
        return absl::InvalidArgumentError(
            "items/keys are only allowed on list, tuple, dict and set values");
      }
      continue;
    }
    if (depth >= max_depth) {
      return absl::InvalidArgumentError(
          absl::StrCat("value nested deeper than the limit of ", max_depth, " levels"));
    }
    if (v->kind_case() == v1::Value::kDict) {
      if (v->keys_size() != v->items_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dict value with ", v->keys_size(), " keys and ", v->items_size(), " items"));
      }
      for (const v1::Value& key : v->keys()) pending.emplace_back(&key, depth + 1);
    } else if (v->keys_size() > 0) {
      return absl::InvalidArgumentError("keys are only allowed on dict values");
    }
    for (const v1::Value& item : v->items()) pending.emplace_back(&item, depth + 1);
  }
  return absl::OkStatus();
}

absl::Status ValidateRequest(const v1::EvalRequest& request, int max_value_depth) {
  if (request.code().empty()) return absl::InvalidArgumentError("code is empty");
  if (request.result_as_ref() && request.session().empty()) {
    return absl::InvalidArgumentError("result_as_ref needs a bound session");
  }
  return ValidateMap(request.locals(), "local", max_value_depth);
}

absl::Status ValidateRequest(const v1::ExecRequest& request, int max_value_depth) {
  if (request.code().empty()) return absl::InvalidArgumentError("code is empty");
  return ValidateMap(request.locals(), "local", max_value_depth);
}

absl::Status ValidateRequest(const v1::CallRequest& request, int max_value_depth) {
  if (request.function().empty()) {
    return absl::InvalidArgumentError("function is empty");
  }
  if (!request.target_ref().empty()) {
    if (!request.module().empty()) {
      return absl::InvalidArgumentError("module must be empty when target_ref is set");
    }
    if (request.session().empty()) {
      return absl::InvalidArgumentError("target_ref needs a bound session");
    }
  } else if (request.module().empty()) {
    return absl::InvalidArgumentError("module is empty (use \"builtins\" or \"__main__\")");
  }
  if (request.get_attribute() && (request.args_size() > 0 || request.kwargs_size() > 0)) {
    return absl::InvalidArgumentError(
        "get_attribute reads an attribute: args and kwargs must be empty");
  }
  if (request.result_as_ref() && request.session().empty()) {
    return absl::InvalidArgumentError("result_as_ref needs a bound session");
  }
  for (int i = 0; i < request.args_size(); ++i) {
    if (absl::Status s = ValidateValue(request.args(i), max_value_depth); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("argument ", i, ": ", s.message()));
    }
  }
  return ValidateMap(request.kwargs(), "keyword argument", max_value_depth);
}

absl::Status ValidateRequest(const v1::ReleaseRequest& request) {
  if (request.session().empty()) {
    return absl::InvalidArgumentError("session is empty: only bound sessions hold refs");
  }
  return absl::OkStatus();
}

}  // namespace pyexec
