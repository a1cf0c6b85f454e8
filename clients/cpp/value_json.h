// A Value as tagged JSON, the lossless form of clients/conformance/README.md:
// one single-key object per value, e.g. {"int": "42"}, {"bytes": "AAH/"},
// {"tuple": [...]}, {"dict": [[K, V], ...]}. Used by `pyexec --json`.

#ifndef PYEXEC_CLIENTS_CPP_VALUE_JSON_H_
#define PYEXEC_CLIENTS_CPP_VALUE_JSON_H_

#include <string>

#include "nlohmann/json.hpp"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// Returns the tagged JSON of `value`: ints as decimal strings (exact at any
// size), floats as numbers or "nan"/"inf"/"-inf", bytes as standard base64,
// list/tuple/set as arrays, dict as an array of [key, value] pairs (keys of
// any kind), opaque as {"type", "repr"}, ref as {"id", "type", "repr"}. A Value with no kind is null.
nlohmann::json ValueToJson(const v1::Value& value);

// Serialises `json` on one line; invalid UTF-8 is replaced by U+FFFD rather
// than throwing.
std::string DumpJson(const nlohmann::json& json);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_VALUE_JSON_H_
