#ifndef PYEXEC_WORKER_PY_REF_H_
#define PYEXEC_WORKER_PY_REF_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace pyexec {

// Owns one Python reference (or none) and drops it on destruction. Requires
// the GIL wherever it is reset or destroyed.
class PyRef {
 public:
  explicit PyRef(PyObject* object = nullptr) : object_(object) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() { Py_XDECREF(object_); }

  PyObject* get() const { return object_; }
  explicit operator bool() const { return object_ != nullptr; }
  // Gives up ownership.
  PyObject* release() {
    PyObject* o = object_;
    object_ = nullptr;
    return o;
  }
  // Drops the current reference and takes `object`.
  void reset(PyObject* object) {
    Py_XDECREF(object_);
    object_ = object;
  }

 private:
  PyObject* object_;
};

}  // namespace pyexec

#endif  // PYEXEC_WORKER_PY_REF_H_
