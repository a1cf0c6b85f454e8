// Building pyexec.v1.Value messages from C++ and printing them the way
// Python's repr() would.

#ifndef PYEXEC_CLIENTS_CPP_VALUE_H_
#define PYEXEC_CLIENTS_CPP_VALUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// Returns a Value holding Python's None.
v1::Value MakeNone();

// Returns a Value holding a Python bool.
v1::Value MakeBool(bool b);

// Returns a Value holding a Python int that fits in int64.
v1::Value MakeInt(int64_t i);

// Returns a Value holding a Python int given as a decimal string with an
// optional leading '-' or '+' (e.g. "12345678901234567890"). A number that
// fits in int64 becomes the `int` kind, anything larger the `big_int` kind, so
// the result is what the server itself would send. INVALID_ARGUMENT if
// `decimal` is not a decimal integer.
absl::StatusOr<v1::Value> MakeBigInt(absl::string_view decimal);

// Returns a Value holding a Python float (nan and +-inf included).
v1::Value MakeFloat(double d);

// Returns a Value holding a Python str. `utf8` must be valid UTF-8; the
// server rejects anything else with INVALID_ARGUMENT.
v1::Value MakeStr(absl::string_view utf8);

// Returns a Value holding Python bytes (any octets).
v1::Value MakeBytes(absl::string_view data);

// Returns a Value holding a Python list of `items`.
v1::Value MakeList(std::vector<v1::Value> items);

// Returns a Value holding a Python tuple of `items`.
v1::Value MakeTuple(std::vector<v1::Value> items);

// Returns a Value holding a Python dict with `entries` in order. Keys may be
// of any kind that is hashable in Python (not list, dict or set).
v1::Value MakeDict(std::vector<std::pair<v1::Value, v1::Value>> entries);

// Returns a Value holding a Python set of `items`.
v1::Value MakeSet(std::vector<v1::Value> items);

// A live Python object held by a bound session (Value kind `ref`). Pass it
// back with ToValue() as an argument, keyword argument or local on the same
// session, or as the target of Client::CallMethod / GetAttr. Valid until
// Client::Release or Unbind.
struct Ref {
  std::string id;
  std::string type;  // qualified type name, e.g. "pandas.DataFrame"
  std::string repr;  // repr() when the ref was made

  // A Value naming this ref (only the id travels).
  v1::Value ToValue() const;
  // The ref a Value holds, or nullopt if it is not a ref.
  static std::optional<Ref> From(const v1::Value& value);
};

// Returns Python's repr() of a str given as UTF-8, e.g. 'it''s' -> "it's",
// with Python's choice of quotes and escapes. Code points that Python counts
// as non-printable are escaped as \xhh, \uhhhh or \Uhhhhhhhh; this covers
// controls, separators, format characters, private use and non-characters,
// but not unassigned code points. Invalid UTF-8 bytes are shown as \xhh.
std::string FormatStr(absl::string_view utf8);

// True if `s` is valid UTF-8 as a Python str may hold it when it travels as
// Value.str: no overlong forms, no surrogates, nothing past U+10FFFF.
bool IsValidUtf8(absl::string_view s);

// Returns Python's repr() of bytes, e.g. b'\x00ab'.
std::string FormatBytes(absl::string_view data);

// Returns Python's repr() of a float: the shortest string that round-trips,
// e.g. 1.5, 1e+16, 1e-05, -0.0, nan, inf, -inf.
std::string FormatFloat(double d);

// Returns Python's repr() of `value`: None, True, 1, 12345678901234567890,
// 1.5, 'str', b'bytes', [1, 2], (1,), {'k': 1}, set(), {1, 2}. An opaque
// value or a ref prints its repr as the server sent it. A Value with no kind set prints as
// <unset>, which no Python object does.
std::string FormatValue(const v1::Value& value);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_VALUE_H_
