// Parsing of the `pyexec call` command's positional arguments.

#ifndef PYEXEC_CLIENTS_CPP_CLI_ARGS_H_
#define PYEXEC_CLIENTS_CPP_CLI_ARGS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// Turns one command-line argument into a Value, Python-literal style:
//   None, True, False                  -> None / bool
//   42, -7, +3, 123456789012345678901  -> int (big_int past int64)
//   1.5, -2e3, .5, 1., nan, inf, -inf  -> float
//   'text', "text"                     -> str, with the escapes \\ \' \" \n
//                                         \r \t \0 \xhh \uhhhh \Uhhhhhhhh
//   b'data', b"data"                   -> bytes, with the escapes above
//                                         except \u and \U
//   anything else                      -> str, taken verbatim
// So `hello` and `'hello'` both give 'hello', while `'42'` gives the string
// '42'. Lists, dicts and other containers are not parsed: they arrive as str.
// INVALID_ARGUMENT for a quoted argument that is unterminated or has a bad
// escape.
absl::StatusOr<v1::Value> ParseLiteralArg(absl::string_view arg);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_CLI_ARGS_H_
