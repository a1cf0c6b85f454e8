// Fuzzes the worker's Value <-> Python conversion in an embedded CPython.
//
// Input: a serialized pyexec.v1.Value. Whatever parses must convert to
// Python or fail with a Status and no Python exception left set; a Python
// object made from a Value must convert back, and that Value must convert
// to an equal Python object again (values holding a NaN excepted, as NaN is
// unequal to itself).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"

#include "common/frame.h"
#include "worker/python_value.h"
#include "pyexec/v1/pyexec.pb.h"

namespace {

constexpr int kMaxDepth = 64;

bool HasNan(const pyexec::v1::Value& v) {
  if (v.kind_case() == pyexec::v1::Value::kFloat && std::isnan(v.float_())) return true;
  for (const auto& item : v.items()) {
    if (HasNan(item)) return true;
  }
  for (const auto& key : v.keys()) {
    if (HasNan(key)) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Py_InitializeEx(0);
  // Invalid UTF-8 in string fields is routine here; do not log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pyexec::v1::Value value;
  // The worker parses requests with the frame parser's recursion limit.
  if (!pyexec::ParseFramePayload(
          absl::string_view(reinterpret_cast<const char*>(data), size), &value)) {
    return 0;
  }
  absl::StatusOr<PyObject*> object = pyexec::ValueToPython(value, kMaxDepth);
  if (PyErr_Occurred()) std::abort();  // errors are Statuses, not exceptions
  if (!object.ok()) {
    if (object.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  pyexec::v1::Value back;
  absl::Status s = pyexec::PythonToValue(*object, kMaxDepth, &back);
  if (!s.ok()) {
    PyErr_Print();
    std::abort();  // what came from a Value must go back to one
  }
  absl::StatusOr<PyObject*> again = pyexec::ValueToPython(back, kMaxDepth);
  if (!again.ok()) std::abort();
  if (!HasNan(value)) {
    int equal = PyObject_RichCompareBool(*object, *again, Py_EQ);
    if (equal != 1) {
      PyErr_Clear();
      std::abort();
    }
  }
  Py_DECREF(*again);
  Py_DECREF(*object);
  return 0;
}
