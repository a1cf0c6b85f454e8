#ifndef PYEXEC_WORKER_PYTHON_VALUE_H_
#define PYEXEC_WORKER_PYTHON_VALUE_H_

// Conversion between pyexec.v1.Value and Python objects, following the value
// table in DESIGN.md. Requires the GIL.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pyexec/v1/pyexec.pb.h"

namespace pyexec {

// Converts a Value arriving in a request into a new Python reference.
// `max_depth` bounds container nesting: a scalar has depth 0, [1] depth 1.
// A set that is a dict key or a set element becomes a frozenset, the only
// hashable kind of set. Errors are INVALID_ARGUMENT (bad value, nesting too deep, unhashable set
// element or dict key); no Python exception is left set.
absl::StatusOr<PyObject*> ValueToPython(const v1::Value& value, int max_depth);

// Converts a Python object into a Value for a response. Objects with no Value
// kind become Opaque {type, repr}. On failure (nesting deeper than
// `max_depth`, or a Python exception raised while converting, e.g. by a
// __repr__) returns an error status and leaves a Python exception set
// describing it, so that the caller can report it as a PythonError.
absl::Status PythonToValue(PyObject* object, int max_depth, v1::Value* out);

// The UTF-8 of a str that is display text (a repr, captured output, an
// int's digits): lone surrogates are backslash-escaped, since a protobuf
// string must be valid UTF-8. Returns false with an exception set.
bool DisplayTextToUtf8(PyObject* str, std::string* out);

// The qualified type name Python shows for `object`, e.g. "datetime.date";
// builtins drop the module. Never fails.
std::string PythonTypeName(PyObject* object);

}  // namespace pyexec

#endif  // PYEXEC_WORKER_PYTHON_VALUE_H_
