#include "worker/python_value.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/py_ref.h"

namespace pyexec {
namespace {

// Takes the pending Python exception as text and clears it.
std::string TakePythonErrorText() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  std::string text = "unknown error";
  if (value != nullptr) {
    PyRef str(PyObject_Str(value));
    const char* utf8 = str ? PyUnicode_AsUTF8(str.get()) : nullptr;
    if (utf8 != nullptr) text = absl::StrCat(PythonTypeName(value), ": ", utf8);
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  return text;
}

bool IsDecimalInteger(absl::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c)) return false;
  }
  return true;
}

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

// `hashable`: the object will be a dict key or a set element, so a set
// becomes a frozenset (and a tuple passes that on to its elements).
absl::StatusOr<PyObject*> ToPython(const v1::Value& value, int depth,
                                   int max_depth, RefHooks* refs, bool hashable);

// Converts value.items() into a new list.
absl::StatusOr<PyObject*> ItemsToList(const v1::Value& value, int depth,
                                      int max_depth, RefHooks* refs, bool hashable) {
  PyRef list(PyList_New(value.items_size()));
  if (!list) return absl::ResourceExhaustedError(TakePythonErrorText());
  for (int i = 0; i < value.items_size(); ++i) {
    absl::StatusOr<PyObject*> item =
        ToPython(value.items(i), depth, max_depth, refs, hashable);
    if (!item.ok()) return item.status();
    PyList_SET_ITEM(list.get(), i, *item);  // steals the reference
  }
  return list.release();
}

absl::StatusOr<PyObject*> ToPython(const v1::Value& value, int depth,
                                   int max_depth, RefHooks* refs, bool hashable) {
  if (IsContainer(value)) {
    if (depth >= max_depth) {
      return absl::InvalidArgumentError(absl::StrCat(
          "value nested deeper than the limit of ", max_depth, " levels"));
    }
    ++depth;
  } else if (value.items_size() > 0 || value.keys_size() > 0) {
    return absl::InvalidArgumentError(
        "items/keys are only allowed on list, tuple, dict and set values");
  }
  switch (value.kind_case()) {
    case v1::Value::kNone:
      Py_RETURN_NONE;
    case v1::Value::kBool:
      return PyBool_FromLong(value.bool_());
    case v1::Value::kInt:
      return PyLong_FromLongLong(value.int_());
    case v1::Value::kBigInt: {
      if (!IsDecimalInteger(value.big_int())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "big_int is not a decimal integer: \"",
            value.big_int().substr(0, 40), "\""));
      }
      PyObject* n = PyLong_FromString(value.big_int().c_str(), nullptr, 10);
      if (n == nullptr) return absl::InvalidArgumentError(TakePythonErrorText());
      return n;
    }
    case v1::Value::kFloat:
      return PyFloat_FromDouble(value.float_());
    case v1::Value::kStr: {
      PyObject* s = PyUnicode_DecodeUTF8(value.str().data(),
                                         value.str().size(), "strict");
      if (s == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "str value is not valid UTF-8: ", TakePythonErrorText()));
      }
      return s;
    }
    case v1::Value::kBytes:
      return PyBytes_FromStringAndSize(value.bytes().data(),
                                       value.bytes().size());
    case v1::Value::kList:
      return ItemsToList(value, depth, max_depth, refs, /*hashable=*/false);
    case v1::Value::kTuple: {
      absl::StatusOr<PyObject*> list =
          ItemsToList(value, depth, max_depth, refs, hashable);
      if (!list.ok()) return list.status();
      PyRef owned(*list);
      return PyList_AsTuple(owned.get());
    }
    case v1::Value::kSet: {
      absl::StatusOr<PyObject*> list =
          ItemsToList(value, depth, max_depth, refs, /*hashable=*/true);
      if (!list.ok()) return list.status();
      PyRef owned(*list);
      PyObject* set = hashable ? PyFrozenSet_New(owned.get())
                               : PySet_New(owned.get());
      if (set == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "set element cannot be used: ", TakePythonErrorText()));
      }
      return set;
    }
    case v1::Value::kDict: {
      if (value.keys_size() != value.items_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dict has ", value.keys_size(), " keys but ", value.items_size(),
            " items"));
      }
      PyRef dict(PyDict_New());
      if (!dict) return absl::ResourceExhaustedError(TakePythonErrorText());
      for (int i = 0; i < value.keys_size(); ++i) {
        absl::StatusOr<PyObject*> key =
            ToPython(value.keys(i), depth, max_depth, refs, /*hashable=*/true);
        if (!key.ok()) return key.status();
        PyRef owned_key(*key);
        absl::StatusOr<PyObject*> item =
            ToPython(value.items(i), depth, max_depth, refs, /*hashable=*/false);
        if (!item.ok()) return item.status();
        PyRef owned_item(*item);
        if (PyDict_SetItem(dict.get(), owned_key.get(), owned_item.get()) < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "dict key cannot be used: ", TakePythonErrorText()));
        }
      }
      return dict.release();
    }
    case v1::Value::kRef:
      if (refs == nullptr) {
        return absl::InvalidArgumentError(
            "unknown ref: refs exist only on the bound session that made them");
      }
      return refs->Resolve(value.ref().id());
    case v1::Value::kOpaque:
      return absl::InvalidArgumentError(absl::StrCat(
          "an opaque value (", value.opaque().type(),
          ") has no content and cannot be sent to Python"));
    case v1::Value::KIND_NOT_SET:
      return absl::InvalidArgumentError("Value has no kind set");
  }
  return absl::InvalidArgumentError("Value has an unknown kind");
}

absl::Status FromPython(PyObject* object, int depth, int max_depth, RefHooks* refs,
                        v1::Value* out);

absl::Status EnterContainer(int* depth, int max_depth) {
  if (*depth >= max_depth) {
    PyErr_Format(PyExc_ValueError,
                 "result nested deeper than the limit of %d levels",
                 max_depth);
    return absl::InvalidArgumentError("result nested too deeply");
  }
  ++*depth;
  return absl::OkStatus();
}

absl::Status SequenceFromPython(PyObject* sequence, int depth, int max_depth, RefHooks* refs,
                                v1::Value* out) {
  // PySequence_Fast gives lists and tuples (including subclasses) direct
  // item access and copies anything else, e.g. a set, into a list.
  PyRef fast(PySequence_Fast(sequence, "not iterable"));
  if (!fast) return absl::InternalError("iteration failed");
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast.get());
  PyObject** items = PySequence_Fast_ITEMS(fast.get());
  out->mutable_items()->Reserve(static_cast<int>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    absl::Status s = FromPython(items[i], depth, max_depth, refs, out->add_items());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status OpaqueFromPython(PyObject* object, v1::Value* out) {
  v1::Opaque* opaque = out->mutable_opaque();
  opaque->set_type(PythonTypeName(object));
  PyRef repr(PyObject_Repr(object));
  if (!repr) return absl::InternalError("repr() failed");
  if (!DisplayTextToUtf8(repr.get(), opaque->mutable_repr())) {
    return absl::InternalError("repr() is not encodable");
  }
  return absl::OkStatus();
}

absl::Status FromPython(PyObject* object, int depth, int max_depth, RefHooks* refs,
                        v1::Value* out) {
  if (object == Py_None) {
    out->mutable_none();
  } else if (PyBool_Check(object)) {
    out->set_bool_(object == Py_True);
  } else if (PyLong_Check(object)) {
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(object, &overflow);
    if (overflow == 0) {
      if (n == -1 && PyErr_Occurred()) return absl::InternalError("int");
      out->set_int_(n);
    } else {
      PyRef decimal(PyNumber_ToBase(object, 10));
      if (!decimal) return absl::InternalError("int to decimal failed");
      if (!DisplayTextToUtf8(decimal.get(), out->mutable_big_int())) {
        return absl::InternalError("int to decimal failed");
      }
    }
  } else if (PyFloat_Check(object)) {
    out->set_float_(PyFloat_AS_DOUBLE(object));
  } else if (PyUnicode_Check(object)) {
    // Strict: a str with lone surrogates has no UTF-8 form, and escaping it
    // would hand back a different string. The caller gets the
    // UnicodeEncodeError instead.
    Py_ssize_t size;
    const char* utf8 = PyUnicode_AsUTF8AndSize(object, &size);
    if (utf8 == nullptr) return absl::InvalidArgumentError("str is not UTF-8");
    out->set_str(utf8, size);
  } else if (PyBytes_Check(object)) {
    out->set_bytes(PyBytes_AS_STRING(object), PyBytes_GET_SIZE(object));
  } else if (PyByteArray_Check(object)) {
    out->set_bytes(PyByteArray_AS_STRING(object), PyByteArray_GET_SIZE(object));
  } else if (PyList_Check(object) || PyTuple_Check(object)) {
    absl::Status s = EnterContainer(&depth, max_depth);
    if (!s.ok()) return s;
    if (PyList_Check(object)) {
      out->set_list(true);
    } else {
      out->set_tuple(true);
    }
    return SequenceFromPython(object, depth, max_depth, refs, out);
  } else if (PyAnySet_Check(object)) {
    absl::Status s = EnterContainer(&depth, max_depth);
    if (!s.ok()) return s;
    out->set_set(true);
    return SequenceFromPython(object, depth, max_depth, refs, out);
  } else if (PyDict_Check(object)) {
    absl::Status s = EnterContainer(&depth, max_depth);
    if (!s.ok()) return s;
    out->set_dict(true);
    // Snapshot the items first: converting a key or value may run Python
    // code (a __repr__) that mutates the dict while PyDict_Next walks it.
    PyRef items(PyDict_Items(object));
    if (!items) return absl::InternalError("dict items failed");
    Py_ssize_t n = PyList_GET_SIZE(items.get());
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* pair = PyList_GET_ITEM(items.get(), i);
      s = FromPython(PyTuple_GET_ITEM(pair, 0), depth, max_depth, refs,
                     out->add_keys());
      if (!s.ok()) return s;
      s = FromPython(PyTuple_GET_ITEM(pair, 1), depth, max_depth, refs,
                     out->add_items());
      if (!s.ok()) return s;
    }
  } else if (refs != nullptr) {
    return refs->Make(object, out->mutable_ref());
  } else {
    return OpaqueFromPython(object, out);
  }
  return absl::OkStatus();
}

}  // namespace

bool DisplayTextToUtf8(PyObject* str, std::string* out) {
  Py_ssize_t size;
  const char* utf8 = PyUnicode_AsUTF8AndSize(str, &size);
  if (utf8 != nullptr) {
    out->assign(utf8, size);
    return true;
  }
  PyErr_Clear();
  PyRef encoded(PyUnicode_AsEncodedString(str, "utf-8", "backslashreplace"));
  if (!encoded) return false;
  out->assign(PyBytes_AS_STRING(encoded.get()),
              PyBytes_GET_SIZE(encoded.get()));
  return true;
}

std::string PythonTypeName(PyObject* object) {
  PyTypeObject* type = Py_TYPE(object);
  std::string name = type->tp_name;  // "module.Name" for heap types
  PyRef qualname(PyObject_GetAttrString(reinterpret_cast<PyObject*>(type),
                                        "__qualname__"));
  PyRef module(PyObject_GetAttrString(reinterpret_cast<PyObject*>(type),
                                      "__module__"));
  PyErr_Clear();
  // PyUnicode_AsUTF8 is null for a str that is not valid UTF-8 (lone
  // surrogates); then tp_name stands.
  const char* qual = qualname && PyUnicode_Check(qualname.get())
                         ? PyUnicode_AsUTF8(qualname.get())
                         : nullptr;
  PyErr_Clear();
  if (qual != nullptr) {
    name = qual;
    if (module && PyUnicode_Check(module.get())) {
      const char* m = PyUnicode_AsUTF8(module.get());
      if (m != nullptr && strcmp(m, "builtins") != 0) {
        name = absl::StrCat(m, ".", name);
      }
    }
  }
  PyErr_Clear();
  return name;
}

absl::StatusOr<PyObject*> ValueToPython(const v1::Value& value, int max_depth,
                                        RefHooks* refs) {
  return ToPython(value, 0, max_depth, refs, /*hashable=*/false);
}

absl::Status PythonToValue(PyObject* object, int max_depth, v1::Value* out,
                           RefHooks* refs) {
  absl::Status s = FromPython(object, 0, max_depth, refs, out);
  if (!s.ok() && !PyErr_Occurred()) {
    PyErr_SetString(PyExc_ValueError, std::string(s.message()).c_str());
  }
  return s;
}

}  // namespace pyexec
