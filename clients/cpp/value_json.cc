#include "clients/cpp/value_json.h"

#include <cmath>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace pyexec {

namespace {

nlohmann::json Items(const v1::Value& value) {
  nlohmann::json items = nlohmann::json::array();
  for (const v1::Value& item : value.items()) items.push_back(ValueToJson(item));
  return items;
}

nlohmann::json Float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return d;
}

}  // namespace

nlohmann::json ValueToJson(const v1::Value& value) {
  using nlohmann::json;
  switch (value.kind_case()) {
    case v1::Value::kNone:
      return json{{"none", nullptr}};
    case v1::Value::kBool:
      return json{{"bool", value.bool_()}};
    case v1::Value::kInt:
      return json{{"int", absl::StrCat(value.int_())}};
    case v1::Value::kBigInt:
      return json{{"int", value.big_int()}};
    case v1::Value::kFloat:
      return json{{"float", Float(value.float_())}};
    case v1::Value::kStr:
      return json{{"str", value.str()}};
    case v1::Value::kBytes:
      return json{{"bytes", absl::Base64Escape(value.bytes())}};
    case v1::Value::kList:
      return json{{"list", Items(value)}};
    case v1::Value::kTuple:
      return json{{"tuple", Items(value)}};
    case v1::Value::kSet:
      return json{{"set", Items(value)}};
    case v1::Value::kDict: {
      json entries = json::array();
      for (int i = 0; i < value.keys_size() && i < value.items_size(); ++i) {
        entries.push_back(json::array({ValueToJson(value.keys(i)), ValueToJson(value.items(i))}));
      }
      return json{{"dict", entries}};
    }
    case v1::Value::kOpaque:
      return json{{"opaque", {{"type", value.opaque().type()}, {"repr", value.opaque().repr()}}}};
    case v1::Value::kRef:
      return json{{"ref", {{"id", value.ref().id()}, {"type", value.ref().type()},
                           {"repr", value.ref().repr()}}}};
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return nullptr;
}

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pyexec
