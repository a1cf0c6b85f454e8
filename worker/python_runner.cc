#include "worker/python_runner.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "worker/py_ref.h"
#include "worker/python_value.h"
#include "worker/runner_py.h"

namespace pyexec {

// Borrowed references to the helper functions.
struct Helpers {
  PyObject* capture_type;
  PyObject* run_eval;
  PyObject* run_exec;
  PyObject* run_call;
  PyObject* format_exception;
};

namespace {

// The request id the last SIGINT was meant for (pyexecd sends it with
// sigqueue), 0 for an untagged SIGINT.
std::atomic<uint64_t> interrupt_for{0};

// Replaces CPython's C-level SIGINT handler: records the tag, then trips
// Python's SIGINT exactly as CPython's own handler would (the Python-level
// handler still raises KeyboardInterrupt). Both calls are async-signal-safe.
void OnInterrupt(int, siginfo_t* info, void*) {
  uint64_t id = 0;
  if (info != nullptr && info->si_code == SI_QUEUE) {
    id = static_cast<uint64_t>(
        reinterpret_cast<uintptr_t>(info->si_value.sival_ptr));
  }
  interrupt_for.store(id, std::memory_order_relaxed);
  PyErr_SetInterruptEx(SIGINT);
}

// Describes the pending Python exception in `error` and clears it.
void TakeException(Helpers* helpers, v1::PythonError* error,
                   absl::string_view context = "") {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr && value != nullptr) {
    PyException_SetTraceback(value, traceback);
  }
  PyRef owned_type(type), owned_value(value), owned_tb(traceback);
  if (value == nullptr) {
    error->set_type("SystemError");
    error->set_message("an exception was expected but none was set");
    return;
  }
  PyRef formatted(
      PyObject_CallOneArg(helpers->format_exception, value));
  const char *name = nullptr, *message = nullptr, *tb_text = nullptr;
  if (formatted && PyTuple_Check(formatted.get()) &&
      PyTuple_GET_SIZE(formatted.get()) == 3) {
    name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(formatted.get(), 0));
    message = PyUnicode_AsUTF8(PyTuple_GET_ITEM(formatted.get(), 1));
    tb_text = PyUnicode_AsUTF8(PyTuple_GET_ITEM(formatted.get(), 2));
  }
  if (name == nullptr || message == nullptr || tb_text == nullptr) {
    // Formatting itself failed (e.g. a __str__ that raises): say what we can.
    PyErr_Clear();
    error->set_type(PythonTypeName(value));
    error->set_message("<exception str() failed>");
    error->set_traceback("");
  } else {
    error->set_type(name);
    error->set_message(absl::StrCat(context, message));
    error->set_traceback(tb_text);
  }
}

// Converts request values into a dict of names (locals or kwargs).
absl::StatusOr<PyObject*> MapToDict(
    const google::protobuf::Map<std::string, v1::Value>& values,
    int max_depth) {
  PyRef dict(PyDict_New());
  for (const auto& [name, value] : values) {
    absl::StatusOr<PyObject*> object = ValueToPython(value, max_depth);
    if (!object.ok()) {
      return absl::Status(object.status().code(),
                          absl::StrCat("'", name, "': ", object.status().message()));
    }
    PyRef owned(*object);
    if (PyDict_SetItemString(dict.get(), name.c_str(), owned.get()) < 0) {
      PyErr_Clear();
      return absl::InvalidArgumentError(absl::StrCat("bad name '", name, "'"));
    }
  }
  PyObject* result = dict.get();
  Py_INCREF(result);
  return result;
}

PyObject* NewStr(const std::string& s) {
  return PyUnicode_DecodeUTF8(s.data(), s.size(), "strict");
}

// Cuts `text` to at most `limit` bytes on a UTF-8 character boundary and
// appends a marker when anything was cut.
void BoundOutput(std::string text, bool truncated, size_t limit,
                 std::string* out) {
  if (text.size() > limit) {
    text.resize(Utf8PrefixLength(text, limit));
    truncated = true;
  }
  if (truncated) {
    absl::StrAppend(&text, "\n[pyexec: output truncated at ", limit,
                    " bytes]\n");
  }
  *out = std::move(text);
}

// Reads a Capture's text and truncation flag.
void TakeCapture(PyObject* capture, size_t limit, std::string* out) {
  PyRef value(PyObject_CallMethod(capture, "getvalue", nullptr));
  PyRef truncated(PyObject_GetAttrString(capture, "truncated"));
  std::string text;
  if (value && PyUnicode_Check(value.get())) {
    DisplayTextToUtf8(value.get(), &text);
  }
  PyErr_Clear();
  BoundOutput(std::move(text), truncated && PyObject_IsTrue(truncated.get()),
              limit, out);
  PyErr_Clear();
}

}  // namespace

const char* PythonRunner::PythonVersion() { return Py_GetVersion(); }

absl::Status PythonRunner::Initialize() {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 1;  // SIGINT -> KeyboardInterrupt
  config.parse_argv = 0;
  config.buffered_stdio = 0;
  PyStatus status = PyConfig_SetString(&config, &config.program_name,
                                       L"pyexec_worker");
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    return absl::InternalError(absl::StrCat(
        "Python initialisation failed: ",
        status.err_msg != nullptr ? status.err_msg : "unknown error"));
  }
  // Big ints cross the wire as decimal strings; lift 3.11's 4300-digit limit
  // on int<->str so that they round-trip (sizes are bounded by the message
  // size limit instead).
  PyRun_SimpleString("import sys; sys.set_int_max_str_digits(0)");

  struct sigaction action {};
  action.sa_sigaction = OnInterrupt;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGINT, &action, nullptr) != 0) {
    return absl::InternalError("cannot install the SIGINT handler");
  }

  PyRef code(Py_CompileString(kRunnerSource, "<pyexec-runner>", Py_file_input));
  if (!code) {
    PyErr_Print();
    return absl::InternalError("runner helpers do not compile");
  }
  PyRef module(PyImport_ExecCodeModuleEx("_pyexec_runner", code.get(),
                                         "<pyexec-runner>"));
  if (!module) {
    PyErr_Print();
    return absl::InternalError("runner helpers failed to load");
  }
  auto get = [&](const char* name) {
    return PyObject_GetAttrString(module.get(), name);  // kept for life
  };
  helpers_ = new Helpers{get("Capture"), get("run_eval"), get("run_exec"),
                         get("run_call"), get("format_exception")};
  if (!helpers_->capture_type || !helpers_->run_eval || !helpers_->run_exec ||
      !helpers_->run_call || !helpers_->format_exception) {
    PyErr_Print();
    return absl::InternalError("runner helpers are incomplete");
  }
  return absl::OkStatus();
}

void PythonRunner::Handle(const internal::WorkerRequest& request,
                          internal::WorkerResponse* response) {
  response->set_id(request.id());
  // A SIGINT meant for the previous call may still be pending if it arrived
  // after that call finished: drop it so that it does not interrupt this
  // one. One meant for this call (its deadline or cancel landed between the
  // frame's arrival and now) is tripped again just before the call runs, so
  // that the call stops at once. A tagged SIGINT that arrives after this
  // check stays tripped by itself.
  bool interrupt_this_call = false;
  if (PyErr_CheckSignals() < 0) {
    PyErr_Clear();
    interrupt_this_call =
        request.id() != 0 &&
        interrupt_for.load(std::memory_order_relaxed) == request.id();
  }

  const int depth = limits_.max_value_depth;
  auto fail = [&](const absl::Status& status) {
    response->mutable_failure()->set_code(static_cast<int>(status.code()));
    response->mutable_failure()->set_message(std::string(status.message()));
  };

  // Convert the inputs before touching sys.stdout, so that a bad request
  // leaves no trace.
  PyRef fresh(PyBool_FromLong(request.fresh_namespace()));
  PyRef callable, args;
  switch (request.op_case()) {
    case internal::WorkerRequest::kEval:
    case internal::WorkerRequest::kExec: {
      const bool eval = request.op_case() == internal::WorkerRequest::kEval;
      const std::string& source =
          eval ? request.eval().code() : request.exec().code();
      const auto& locals =
          eval ? request.eval().locals() : request.exec().locals();
      absl::StatusOr<PyObject*> local_values = MapToDict(locals, depth);
      if (!local_values.ok()) return fail(local_values.status());
      PyRef owned_locals(*local_values);
      PyRef code(NewStr(source));
      if (!code) {
        PyErr_Clear();
        return fail(absl::InvalidArgumentError("code is not valid UTF-8"));
      }
      callable.reset(eval ? helpers_->run_eval : helpers_->run_exec);
      Py_INCREF(callable.get());
      args.reset(PyTuple_Pack(3, code.get(), fresh.get(), owned_locals.get()));
      break;
    }
    case internal::WorkerRequest::kCall: {
      const v1::CallRequest& call = request.call();
      PyRef list(PyList_New(call.args_size()));
      for (int i = 0; i < call.args_size(); ++i) {
        absl::StatusOr<PyObject*> arg = ValueToPython(call.args(i), depth);
        if (!arg.ok()) {
          return fail(absl::Status(arg.status().code(),
                                   absl::StrCat("args[", i, "]: ",
                                                arg.status().message())));
        }
        PyList_SET_ITEM(list.get(), i, *arg);
      }
      absl::StatusOr<PyObject*> kwargs = MapToDict(call.kwargs(), depth);
      if (!kwargs.ok()) return fail(kwargs.status());
      PyRef owned_kwargs(*kwargs);
      PyRef module(NewStr(call.module()));
      PyRef function(NewStr(call.function()));
      PyRef tuple(PyList_AsTuple(list.get()));
      if (!module || !function || !tuple) {
        PyErr_Clear();
        return fail(absl::InvalidArgumentError("bad module or function name"));
      }
      callable.reset(helpers_->run_call);
      Py_INCREF(callable.get());
      args.reset(PyTuple_Pack(5, module.get(), function.get(), tuple.get(),
                              owned_kwargs.get(), fresh.get()));
      break;
    }
    case internal::WorkerRequest::OP_NOT_SET:
      return fail(absl::InvalidArgumentError("request has no operation"));
  }

  // Capture sys.stdout/sys.stderr for the duration of the call.
  PyObject* sys_module = PyImport_AddModule("sys");  // borrowed
  PyRef limit(PyLong_FromSize_t(limits_.max_output_bytes));
  PyRef out(PyObject_CallOneArg(helpers_->capture_type, limit.get()));
  PyRef err(PyObject_CallOneArg(helpers_->capture_type, limit.get()));
  if (!out || !err) {
    // Interrupted (or out of memory) before the call started.
    TakeException(helpers_, response->mutable_error());
    return;
  }
  PyRef saved_out(PyObject_GetAttrString(sys_module, "stdout"));
  PyRef saved_err(PyObject_GetAttrString(sys_module, "stderr"));
  PyErr_Clear();
  PyObject_SetAttrString(sys_module, "stdout", out.get());
  PyObject_SetAttrString(sys_module, "stderr", err.get());

  if (interrupt_this_call) PyErr_SetInterruptEx(SIGINT);
  PyRef result(PyObject_Call(callable.get(), args.get(), nullptr));
  if (!result) {
    TakeException(helpers_, response->mutable_error());
  } else if (request.op_case() != internal::WorkerRequest::kExec) {
    absl::Status converted =
        PythonToValue(result.get(), depth, response->mutable_value());
    if (!converted.ok()) {
      response->clear_value();
      TakeException(helpers_, response->mutable_error(),
                    "while converting the result: ");
    }
  }

  PyObject_SetAttrString(sys_module, "stdout", saved_out.get());
  PyObject_SetAttrString(sys_module, "stderr", saved_err.get());
  PyErr_Clear();
  TakeCapture(out.get(), limits_.max_output_bytes, response->mutable_stdout());
  TakeCapture(err.get(), limits_.max_output_bytes, response->mutable_stderr());
}

}  // namespace pyexec
