// A parser for Python literals, as ast.literal_eval reads them, into Values.
// The `pyexec` CLI uses it for `call` arguments, so that they need no server
// round trip to be understood.

#ifndef PYEXEC_CLIENTS_CPP_PYTHON_LITERAL_H_
#define PYEXEC_CLIENTS_CPP_PYTHON_LITERAL_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// The deepest container nesting ParsePythonLiteral accepts; pyexecd's
// --max_value_depth cannot be set higher.
inline constexpr int kMaxLiteralDepth = 100;

// The most decimal digits of an integer that the parser has to compute: one
// written in hex, octal or binary, or an INT**INT power. Python's own default
// limit for int/str conversions (sys.int_info.default_max_str_digits). Plain
// decimal literals are passed on as written and have no such limit.
inline constexpr size_t kMaxComputedIntDigits = 4300;

// Parses `text` as exactly one Python literal (surrounding whitespace and
// comments allowed), the way ast.literal_eval does:
//   None, True, False
//   ints: 42, -7, 1_000, 0x1f, 0o17, 0b101, and any size: 18446744073709551616
//   floats: 1.5, .5, 1., 1e-3, 1_0.5; also the names nan and inf (not Python
//     literals, but floats have no other spelling for them), signed or not
//   str: '...', "...", '''...''', """...""", with r/u prefixes, Python's
//     escapes (\n \t \\ \' \ooo \xhh \uhhhh \Uhhhhhhhh, backslash-newline;
//     an unknown escape such as \q keeps its backslash, as in Python);
//     adjacent literals concatenate ('a' "b" is 'ab')
//   bytes: b'...', rb'...' (ASCII source characters, \xhh for the rest)
//   lists [..], tuples (..) and (x,) and () and, at the top, 1, 2 without
//     parentheses, dicts {k: v}, sets {a, b} and set(), nested up to
//     kMaxLiteralDepth; trailing commas allowed; newlines only inside
//     brackets (or around the literal), as in Python
// One documented extension: INT**INT, e.g. 2**64 or -2**63, is folded to the
// integer it names (both operands integer literals, the exponent
// non-negative, the result at most kMaxComputedIntDigits digits), because
// that is how Python users write big integers and no other expression is.
//
// INVALID_ARGUMENT, with a message that says what and where (1-based
// column), for anything else: a name that is not a literal (with a hint for
// true/false/null), complex numbers and Ellipsis (no Value kind), f-strings,
// \N{...} escapes (no Unicode name table here), lone surrogates (str travels
// as UTF-8), octal escapes past \377 in bytes, a sign before parentheses
// (-(1)), unhashable dict keys or set elements, invalid UTF-8, unterminated
// brackets or strings, deeper nesting. python_literal_differential_test
// checks all of this against ast.literal_eval.
absl::StatusOr<v1::Value> ParsePythonLiteral(absl::string_view text);

}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_PYTHON_LITERAL_H_
