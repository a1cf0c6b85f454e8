#include "worker/python_runner.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/frame.h"
#include "common/utf8.h"
#include "worker/py_ref.h"
#include "worker/python_runner_internal.h"
#include "worker/python_value.h"
#include "worker/ref_table.h"
#include "worker/runner_py.h"
#include "worker/snapshot_py.h"

namespace pyexec {



// _pyexec_emit(kind, text): the Streamer's way out to pyexecd.
PyObject* EmitText(PyObject* self, PyObject* args) {
  auto* runner = static_cast<PythonRunner*>(PyCapsule_GetPointer(self, nullptr));
  int kind;
  PyObject* text;
  if (runner == nullptr || !PyArg_ParseTuple(args, "iU", &kind, &text)) {
    return nullptr;
  }
  if (!runner->SendText(kind, text)) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_OSError, "pyexec: the output stream is closed");
    }
    return nullptr;
  }
  Py_RETURN_NONE;
}

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

PyMethodDef kEmitDef = {"_pyexec_emit", EmitText, METH_VARARGS,
                        "Sends a chunk of streamed output."};
PyMethodDef kCallClientDef = {"_pyexec_call", CallClientNative, METH_VARARGS,
                              "Calls a function the client registered."};

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
    int max_depth, RefHooks* refs) {
  PyRef dict(PyDict_New());
  for (const auto& [name, value] : values) {
    absl::StatusOr<PyObject*> object = ValueToPython(value, max_depth, refs);
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

// The failure a snapshot.StateError (pending) stands for; clears it.
absl::Status TakeStateError() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  PyRef owned_type(type), owned_value(value), owned_tb(traceback);
  PyRef code(value ? PyObject_GetAttrString(value, "code") : nullptr);
  PyRef message(value ? PyObject_GetAttrString(value, "message") : nullptr);
  long number = code ? PyLong_AsLong(code.get()) : -1;
  std::string text;
  if (!message || !PyUnicode_Check(message.get()) ||
      !DisplayTextToUtf8(message.get(), &text)) {
    text = "the snapshot helper failed";
  }
  PyErr_Clear();
  if (number <= 0 || number > static_cast<long>(absl::StatusCode::kUnauthenticated)) {
    number = static_cast<long>(absl::StatusCode::kInternal);
  }
  return absl::Status(static_cast<absl::StatusCode>(number), text);
}

// Appends snapshot.py's (name, type, reason) tuples to `out`.
absl::Status AppendLost(PyObject* list,
                        google::protobuf::RepeatedPtrField<v1::LostName>* out) {
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); ++i) {
    PyObject *name, *type, *reason;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "UUU", &name, &type, &reason)) {
      PyErr_Clear();
      return absl::InternalError("the snapshot helper listed a lost name badly");
    }
    v1::LostName* lost = out->Add();
    if (!DisplayTextToUtf8(name, lost->mutable_name()) ||
        !DisplayTextToUtf8(type, lost->mutable_type()) ||
        !DisplayTextToUtf8(reason, lost->mutable_reason())) {
      PyErr_Clear();
      return absl::InternalError("a lost name is not encodable");
    }
  }
  return absl::OkStatus();
}

// Fills `out` from snapshot.snapshot()'s (state, lost, modules, refs).
absl::Status FillSnapshot(PyObject* result, internal::SnapshotResult* out) {
  PyObject *state, *lost, *modules;
  unsigned int refs;
  if (!PyArg_ParseTuple(result, "SO!O!I", &state, &PyList_Type, &lost, &PyList_Type,
                        &modules, &refs)) {
    PyErr_Clear();
    return absl::InternalError("the snapshot helper returned a malformed result");
  }
  out->set_state(PyBytes_AS_STRING(state), PyBytes_GET_SIZE(state));
  out->set_refs(refs);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(modules); ++i) {
    PyObject* name = PyList_GET_ITEM(modules, i);
    if (!PyUnicode_Check(name) || !DisplayTextToUtf8(name, out->add_modules())) {
      PyErr_Clear();
      return absl::InternalError("a module name is not encodable");
    }
  }
  return AppendLost(lost, out->mutable_lost());
}

// Finishes a restore from snapshot.restore()'s (refs, lost): holds the refs
// again under their ids, lists what was lost, then runs the session's
// __pyexec_restore__() if it defines one; an exception it raises is the
// response's error, and the state stays restored.
absl::Status FinishRestore(Helpers* helpers, PyObject* result, RefTable* refs,
                           internal::WorkerResponse* response) {
  PyObject *table, *lost;
  if (!PyArg_ParseTuple(result, "O!O!", &PyDict_Type, &table, &PyList_Type, &lost)) {
    PyErr_Clear();
    return absl::InternalError("the restore helper returned a malformed result");
  }
  PyObject *key, *object;
  Py_ssize_t pos = 0;
  while (PyDict_Next(table, &pos, &key, &object)) {
    Py_ssize_t size;
    const char* id = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &size) : nullptr;
    if (id == nullptr) {
      PyErr_Clear();
      return absl::InternalError("the restore helper returned a malformed ref id");
    }
    refs->Adopt(std::string(id, size), object);
  }
  absl::Status listed = AppendLost(lost, response->mutable_restore_lost());
  if (!listed.ok()) return listed;
  PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));  // borrowed
  if (PyDict_GetItemString(main_dict, "__pyexec_restore__") == nullptr) {
    return absl::OkStatus();
  }
  PyRef hook_args(Py_BuildValue("(ss()NO)", "__main__", "__pyexec_restore__",
                                PyDict_New(), Py_False));
  PyRef done(hook_args ? PyObject_Call(helpers->run_call, hook_args.get(), nullptr)
                       : nullptr);
  if (!done) TakeException(helpers, response->mutable_error());
  return absl::OkStatus();
}

}  // namespace

void CapResponse(size_t max_bytes, internal::WorkerResponse* response) {
  size_t size = response->ByteSizeLong();
  if (size <= max_bytes) return;
  uint64_t id = response->id();
  response->Clear();
  response->set_id(id);
  response->mutable_failure()->set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  response->mutable_failure()->set_message(absl::StrCat(
      "the result is ", size, " bytes, more than --max_message_bytes (", max_bytes,
      "); the session is intact"));
}

PythonRunner::PythonRunner(const RunnerLimits& limits)
    : limits_(limits), refs_(new RefTable()) {}

// The interpreter is never finalised: the refs' objects die with the process.
PythonRunner::~PythonRunner() { (void)refs_.release(); }

const char* PythonRunner::PythonVersion() { return Py_GetVersion(); }

bool PythonRunner::SendPartial(internal::WorkerResponse* partial) {
  partial->set_id(current_id_);
  partial->set_partial(true);
  return SendUnlocked(*partial);
}

bool PythonRunner::SendUnlocked(const internal::WorkerResponse& frame) {
  bool sent;
  if (!send_) return false;
  Py_BEGIN_ALLOW_THREADS
  sent = send_(frame);
  Py_END_ALLOW_THREADS
  return sent;
}

bool PythonRunner::SendFromCallback(const internal::WorkerResponse& frame) {
  if (SendUnlocked(frame)) return true;
  PyErr_SetString(PyExc_OSError, "pyexec.call: the connection to pyexecd is closed");
  return false;
}

bool PythonRunner::SendText(int kind, PyObject* text) {
  internal::WorkerResponse partial;
  std::string* out =
      kind == 2 ? partial.mutable_stderr() : partial.mutable_stdout();
  if (!DisplayTextToUtf8(text, out)) return false;
  return SendPartial(&partial);
}

absl::Status PythonRunner::Initialize() {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 1;  // SIGINT -> KeyboardInterrupt
  config.parse_argv = 0;
  config.buffered_stdio = 0;
  PyStatus status = PyConfig_SetString(&config, &config.program_name,
                                       L"pyexec_worker");
  // sys.executable names the system interpreter of the same version, so
  // that user code can start Python subprocesses the usual way
  // (subprocess.run([sys.executable, ...]), multiprocessing's spawn); left
  // empty, as an embedded interpreter's is, they fail. Not set when there
  // is none (a runtime image with only the library).
  const std::string executable =
      absl::StrCat("/usr/bin/python", PY_MAJOR_VERSION, ".", PY_MINOR_VERSION);
  if (!PyStatus_Exception(status) && access(executable.c_str(), X_OK) == 0) {
    status = PyConfig_SetBytesString(&config, &config.executable, executable.c_str());
  }
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
  // After the runner is loaded: its signal.signal() call (the Python-level
  // handler that defers KeyboardInterrupt) replaces the C-level handler too.
  struct sigaction action {};
  action.sa_sigaction = OnInterrupt;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGINT, &action, nullptr) != 0) {
    return absl::InternalError("cannot install the SIGINT handler");
  }
  auto get = [&](const char* name) {
    return PyObject_GetAttrString(module.get(), name);  // kept for life
  };
  helpers_ = new Helpers{get("Capture"),        get("Streamer"),
                         get("run_eval"),       get("run_exec"),
                         get("run_call"),       get("format_exception"),
                         get("after_fork"),     get("before_forks"),
                         get("stream_items"),   get("CallbackError"),
                         get("install_client_modules")};
  PyRef capsule(PyCapsule_New(this, nullptr, nullptr));
  emit_ = PyCFunction_New(&kEmitDef, capsule.get());
  call_client_ = PyCFunction_New(&kCallClientDef, capsule.get());
  if (!emit_ || !call_client_ || !helpers_->streamer_type || !helpers_->capture_type ||
      !helpers_->run_eval || !helpers_->run_exec || !helpers_->run_call ||
      !helpers_->format_exception || !helpers_->after_fork || !helpers_->before_forks ||
      !helpers_->stream_items || !helpers_->callback_error_type ||
      !helpers_->install_client_modules) {
    PyErr_Print();
    return absl::InternalError("runner helpers are incomplete");
  }
  PyRef installed(PyObject_CallOneArg(helpers_->install_client_modules, call_client_));
  if (!installed) {
    PyErr_Print();
    return absl::InternalError("cannot install the pyexec module");
  }
  // Last, so that the modules loaded so far count as every worker's own
  // and snapshots do not list them.
  PyRef snapshot_code(
      Py_CompileString(kSnapshotSource, "<pyexec-snapshot>", Py_file_input));
  PyRef snapshot_module(snapshot_code ? PyImport_ExecCodeModuleEx(
                                            "_pyexec_snapshot", snapshot_code.get(),
                                            "<pyexec-snapshot>")
                                      : nullptr);
  PyRef marked(snapshot_module ? PyObject_CallMethod(snapshot_module.get(), "mark_installed",
                                                     "((ss))", "pyexec", "erlang")
                               : nullptr);
  if (!marked) {
    PyErr_Print();
    return absl::InternalError("snapshot helpers failed to load");
  }
  helpers_->snapshot = PyObject_GetAttrString(snapshot_module.get(), "snapshot");
  helpers_->restore = PyObject_GetAttrString(snapshot_module.get(), "restore");
  helpers_->state_error_type = PyObject_GetAttrString(snapshot_module.get(), "StateError");
  if (!helpers_->snapshot || !helpers_->restore || !helpers_->state_error_type) {
    PyErr_Print();
    return absl::InternalError("snapshot helpers are incomplete");
  }
  return absl::OkStatus();
}

absl::Status PythonRunner::BeforeForks() {
  PyRef done(PyObject_CallNoArgs(helpers_->before_forks));
  if (done) return absl::OkStatus();
  PyErr_Print();
  return absl::InternalError("before_forks failed");
}

absl::Status PythonRunner::AfterFork(const std::string& private_dir) {
  PyRef dir(private_dir.empty() ? Py_NewRef(Py_None)
                                : PyUnicode_DecodeFSDefault(private_dir.c_str()));
  PyRef done(dir ? PyObject_CallOneArg(helpers_->after_fork, dir.get()) : nullptr);
  if (done) return absl::OkStatus();
  PyErr_Print();
  return absl::InternalError("after_fork failed");
}

void PythonRunner::Handle(const internal::WorkerRequest& request,
                          internal::WorkerResponse* response) {
  response->set_id(request.id());
  // A nested request (made by the client while it runs a callback) runs in
  // the middle of the outer one's: its partial responses carry its own id,
  // and the outer one's carry the outer id again once it returns.
  const uint64_t outer_id = current_id_;
  const size_t outer_depth = active_.size();
  current_id_ = request.id();
  absl::Cleanup restore = [this, outer_id, outer_depth] {
    current_id_ = outer_id;
    active_.resize(outer_depth);
  };
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
    response->clear_value();
    response->clear_error();
    response->clear_stdout();
    response->clear_stderr();
    response->clear_snapshot();
    response->clear_restore_lost();
    response->mutable_failure()->set_code(static_cast<int>(status.code()));
    response->mutable_failure()->set_message(std::string(status.message()));
  };
  // Refs live only in a bound session's namespace; stateless calls get
  // opaque values and may not name refs.
  RefTable* refs = request.fresh_namespace() ? nullptr : refs_.get();
  // A callback stops waiting for the client a moment before the call's
  // deadline, so that the code can still handle the TimeoutError before
  // pyexecd interrupts it.
  constexpr absl::Duration kCallbackMargin = absl::Milliseconds(50);
  active_.push_back({request.id(), request.callbacks(),
                     request.timeout_ms() > 0 ? absl::Now() +
                                                    absl::Milliseconds(request.timeout_ms()) -
                                                    kCallbackMargin
                                              : absl::InfiniteFuture(),
                     refs});
  auto ref_limit_error = [&] {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the session holds --max_refs_per_session (", refs_->max_refs(),
        ") live refs; Release some first"));
  };

  if (request.op_case() == internal::WorkerRequest::kRelease) {
    uint32_t released = 0;
    for (const std::string& id : request.release().ref_ids()) {
      if (refs != nullptr && refs->Drop(id)) ++released;
    }
    PyErr_Clear();  // a __del__ that raised is not the caller's problem
    response->set_released(released);
    return;
  }

  // Convert the inputs before touching sys.stdout, so that a bad request
  // leaves no trace.
  PyRef fresh(PyBool_FromLong(request.fresh_namespace()));
  PyRef callable, args;
  bool result_as_ref = false;
  switch (request.op_case()) {
    case internal::WorkerRequest::kEval:
    case internal::WorkerRequest::kExec: {
      const bool eval = request.op_case() == internal::WorkerRequest::kEval;
      const std::string& source =
          eval ? request.eval().code() : request.exec().code();
      const auto& locals =
          eval ? request.eval().locals() : request.exec().locals();
      result_as_ref = eval && request.eval().result_as_ref();
      absl::StatusOr<PyObject*> local_values = MapToDict(locals, depth, refs);
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
      result_as_ref = call.result_as_ref();
      PyRef list(PyList_New(call.args_size()));
      for (int i = 0; i < call.args_size(); ++i) {
        absl::StatusOr<PyObject*> arg = ValueToPython(call.args(i), depth, refs);
        if (!arg.ok()) {
          return fail(absl::Status(arg.status().code(),
                                   absl::StrCat("args[", i, "]: ",
                                                arg.status().message())));
        }
        PyList_SET_ITEM(list.get(), i, *arg);
      }
      absl::StatusOr<PyObject*> kwargs = MapToDict(call.kwargs(), depth, refs);
      if (!kwargs.ok()) return fail(kwargs.status());
      PyRef owned_kwargs(*kwargs);
      PyRef target;
      if (!call.target_ref().empty()) {
        if (refs == nullptr) {
          return fail(absl::InvalidArgumentError(
              "target_ref: refs exist only on the bound session that made them"));
        }
        absl::StatusOr<PyObject*> object = refs->Resolve(call.target_ref());
        if (!object.ok()) {
          return fail(absl::Status(object.status().code(),
                                   absl::StrCat("target_ref: ",
                                                object.status().message())));
        }
        target.reset(*object);
      }
      PyRef module(NewStr(call.module()));
      PyRef function(NewStr(call.function()));
      PyRef tuple(PyList_AsTuple(list.get()));
      if (!module || !function || !tuple) {
        PyErr_Clear();
        return fail(absl::InvalidArgumentError("bad module or function name"));
      }
      callable.reset(helpers_->run_call);
      Py_INCREF(callable.get());
      if (target) {
        args.reset(PyTuple_Pack(7, module.get(), function.get(), tuple.get(),
                                owned_kwargs.get(), fresh.get(), target.get(),
                                call.get_attribute() ? Py_True : Py_False));
      } else if (call.get_attribute()) {
        PyRef missing(PyObject_GetAttrString(helpers_->run_call, "__defaults__"));
        // run_call's default for `target` is its private "missing" marker.
        PyObject* marker = missing && PyTuple_Check(missing.get())
                               ? PyTuple_GET_ITEM(missing.get(), 0)
                               : Py_None;
        args.reset(PyTuple_Pack(7, module.get(), function.get(), tuple.get(),
                                owned_kwargs.get(), fresh.get(), marker,
                                Py_True));
      } else {
        args.reset(PyTuple_Pack(5, module.get(), function.get(), tuple.get(),
                                owned_kwargs.get(), fresh.get()));
      }
      break;
    }
    case internal::WorkerRequest::kSnapshot:
    case internal::WorkerRequest::kRestore: {
      if (refs == nullptr) {
        return fail(absl::InvalidArgumentError(
            "snapshot and restore need a bound session"));
      }
      PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));  // borrowed
      if (request.op_case() == internal::WorkerRequest::kSnapshot) {
        PyRef table(refs->ToDict());
        PyRef limit(PyLong_FromUnsignedLongLong(request.snapshot().max_bytes()));
        if (!table || !limit) {
          TakeException(helpers_, response->mutable_error());
          return;
        }
        callable.reset(Py_NewRef(helpers_->snapshot));
        args.reset(PyTuple_Pack(3, main_dict, table.get(), limit.get()));
      } else {
        const std::string& state = request.restore().state();
        PyRef blob(PyBytes_FromStringAndSize(state.data(), state.size()));
        if (!blob) {
          TakeException(helpers_, response->mutable_error());
          return;
        }
        callable.reset(Py_NewRef(helpers_->restore));
        args.reset(PyTuple_Pack(2, main_dict, blob.get()));
      }
      break;
    }
    case internal::WorkerRequest::kRelease:
    case internal::WorkerRequest::kCallbackAnswer:
    case internal::WorkerRequest::OP_NOT_SET:
      return fail(absl::InvalidArgumentError("request has no operation"));
  }
  if (result_as_ref && refs == nullptr) {
    return fail(absl::InvalidArgumentError(
        "result_as_ref needs a bound session"));
  }

  // Capture sys.stdout/sys.stderr for the duration of the call; a streamed
  // request forwards them to pyexecd as they are written.
  PyObject* sys_module = PyImport_AddModule("sys");  // borrowed
  PyRef limit(PyLong_FromSize_t(limits_.max_output_bytes));
  PyRef streamer;
  if (request.stream()) {
    streamer.reset(PyObject_CallOneArg(helpers_->streamer_type, emit_));
    if (!streamer) {
      PyErr_Print();
      return fail(absl::InternalError("cannot start the output streamer"));
    }
  }
  auto make_capture = [&](int kind) {
    if (!streamer) return PyObject_CallOneArg(helpers_->capture_type, limit.get());
    PyRef k(PyLong_FromLong(kind));
    return PyObject_CallFunctionObjArgs(helpers_->capture_type, limit.get(),
                                        streamer.get(), k.get(), nullptr);
  };
  PyRef out(make_capture(1));
  PyRef err(make_capture(2));
  if (!out || !err) {
    // Interrupted (or out of memory) before the call started.
    if (streamer) {
      PyRef closed(PyObject_CallMethod(streamer.get(), "close", nullptr));
    }
    TakeException(helpers_, response->mutable_error());
    return;
  }
  PyRef saved_out(PyObject_GetAttrString(sys_module, "stdout"));
  PyRef saved_err(PyObject_GetAttrString(sys_module, "stderr"));
  PyErr_Clear();
  PyObject_SetAttrString(sys_module, "stdout", out.get());
  PyObject_SetAttrString(sys_module, "stderr", err.get());

  // Converts one result (or item) into `value`; refs made for it are rolled
  // back if it cannot be delivered. Returns false with response filled in
  // (a PythonError, or a failure past the ref limit).
  auto convert = [&](PyObject* object, v1::Value* value) {
    if (refs != nullptr) refs->BeginValue(request.max_refs());
    absl::Status converted =
        result_as_ref ? refs->Make(object, value->mutable_ref())
                      : PythonToValue(object, depth, value, refs);
    if (converted.ok()) return true;
    value->Clear();
    if (refs != nullptr) refs->RollBack();
    if (refs != nullptr && refs->limit_hit()) {
      PyErr_Clear();
      fail(ref_limit_error());
    } else {
      TakeException(helpers_, response->mutable_error(),
                    "while converting the result: ");
    }
    return false;
  };
  // Sends one value of a streamed call as a partial response.
  auto send_value = [&](PyObject* object) {
    internal::WorkerResponse partial;
    if (!convert(object, partial.mutable_value())) return false;
    if (partial.ByteSizeLong() > limits_.max_response_bytes) {
      fail(absl::ResourceExhaustedError(absl::StrCat(
          "a streamed value is ", partial.ByteSizeLong(),
          " bytes, more than --max_message_bytes (",
          limits_.max_response_bytes, "); the session is intact")));
      return false;
    }
    // Output printed before the value goes out before it.
    PyRef flushed(PyObject_CallMethod(streamer.get(), "flush", nullptr));
    if (!flushed) {
      TakeException(helpers_, response->mutable_error());
      return false;
    }
    if (!SendPartial(&partial)) {
      fail(absl::UnavailableError("the stream to pyexecd is closed"));
      return false;
    }
    return true;
  };

  if (interrupt_this_call) PyErr_SetInterruptEx(SIGINT);
  if (request.trace()) response->mutable_trace()->set_python_start_ns(MonotonicNanos());
  PyRef result(PyObject_Call(callable.get(), args.get(), nullptr));
  if (request.trace()) response->mutable_trace()->set_python_end_ns(MonotonicNanos());
  const bool state_op = request.op_case() == internal::WorkerRequest::kSnapshot ||
                        request.op_case() == internal::WorkerRequest::kRestore;
  if (!result) {
    if (state_op && PyErr_ExceptionMatches(helpers_->state_error_type)) {
      fail(TakeStateError());
    } else {
      TakeException(helpers_, response->mutable_error());
    }
  } else if (request.op_case() == internal::WorkerRequest::kExec) {
    // no value
  } else if (request.op_case() == internal::WorkerRequest::kSnapshot) {
    absl::Status filled = FillSnapshot(result.get(), response->mutable_snapshot());
    if (!filled.ok()) fail(filled);
  } else if (request.op_case() == internal::WorkerRequest::kRestore) {
    absl::Status restored = FinishRestore(helpers_, result.get(), refs, response);
    if (!restored.ok()) fail(restored);
  } else if (!request.stream()) {
    if (!convert(result.get(), response->mutable_value())) {
      response->clear_value();
    }
  } else {
    // Iterables (generators, iterators, async generators, range, list...)
    // go one value per item, as they are produced; str, bytes and mappings
    // as one value (runner.py stream_items).
    PyRef items(result_as_ref ? Py_NewRef(Py_None)
                              : PyObject_CallOneArg(helpers_->stream_items, result.get()));
    if (!items) {
      TakeException(helpers_, response->mutable_error());
    } else if (items.get() == Py_None) {
      send_value(result.get());
    } else {
      while (true) {
        PyRef item(PyIter_Next(items.get()));
        if (!item) {
          if (PyErr_Occurred()) TakeException(helpers_, response->mutable_error());
          break;
        }
        if (!send_value(item.get())) break;
      }
    }
  }

  if (streamer) {
    PyRef closed(PyObject_CallMethod(streamer.get(), "close", nullptr));
    if (!closed) PyErr_Clear();
  }
  PyObject_SetAttrString(sys_module, "stdout", saved_out.get());
  PyObject_SetAttrString(sys_module, "stderr", saved_err.get());
  PyErr_Clear();
  if (response->has_failure()) return;
  if (!streamer) {
    TakeCapture(out.get(), limits_.max_output_bytes, response->mutable_stdout());
    TakeCapture(err.get(), limits_.max_output_bytes, response->mutable_stderr());
  }
}

}  // namespace pyexec
