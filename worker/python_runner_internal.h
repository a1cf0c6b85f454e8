// What python_runner.cc and python_runner_callbacks.cc share. Internal to
// the python_runner library.

#ifndef PYEXEC_WORKER_PYTHON_RUNNER_INTERNAL_H_
#define PYEXEC_WORKER_PYTHON_RUNNER_INTERNAL_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace pyexec {

// Borrowed references to the helper functions.
struct Helpers {
  PyObject* capture_type;
  PyObject* streamer_type;
  PyObject* run_eval;
  PyObject* run_exec;
  PyObject* run_call;
  PyObject* format_exception;
  PyObject* after_fork;
  PyObject* before_forks;
  PyObject* stream_items;
  PyObject* callback_error_type;
  PyObject* install_client_modules;
  // From the snapshot module (snapshot.py).
  PyObject* snapshot = nullptr;
  PyObject* restore = nullptr;
  PyObject* state_error_type = nullptr;
};

// _pyexec_call(name, args, kwargs), bound to a PythonRunner: pyexec.call's
// way to the client (python_runner_callbacks.cc).
PyObject* CallClientNative(PyObject* self, PyObject* args);

}  // namespace pyexec

#endif  // PYEXEC_WORKER_PYTHON_RUNNER_INTERNAL_H_
