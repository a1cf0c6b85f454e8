#include "worker/ref_table.h"

#include <sys/random.h>

#include "absl/strings/escaping.h"

namespace pyexec {

absl::Status RefTable::Make(PyObject* object, v1::Ref* out) {
  if (objects_.size() >= max_refs_) {
    limit_hit_ = true;
    PyErr_SetString(PyExc_MemoryError, "too many live refs");
    return absl::ResourceExhaustedError("too many live refs");
  }
  PyRef repr(PyObject_Repr(object));
  if (!repr) return absl::InternalError("repr() failed");
  if (!DisplayTextToUtf8(repr.get(), out->mutable_repr())) {
    return absl::InternalError("repr() is not encodable");
  }
  out->set_type(PythonTypeName(object));
  unsigned char bits[12];
  size_t got = 0;
  while (got < sizeof(bits)) {
    ssize_t n = getrandom(bits + got, sizeof(bits) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string id = absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(bits), sizeof(bits)));
  Py_INCREF(object);
  objects_[id] = object;
  made_.push_back(id);
  out->set_id(std::move(id));
  return absl::OkStatus();
}

}  // namespace pyexec
