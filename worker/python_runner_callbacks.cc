// pyexec.call in the worker: Python asks the client to run one of its
// functions, through pyexecd, and waits for the answer; calls the client
// makes meanwhile run here, nested. The rest of PythonRunner is in
// python_runner.cc.
#include "worker/python_runner.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/frame.h"
#include "worker/py_ref.h"
#include "worker/python_runner_internal.h"
#include "worker/python_value.h"
#include "worker/ref_table.h"

namespace pyexec {

// _pyexec_call(name, args, kwargs): pyexec.call's way to the client.
PyObject* CallClientNative(PyObject* self, PyObject* args) {
  auto* runner = static_cast<PythonRunner*>(PyCapsule_GetPointer(self, nullptr));
  PyObject *name, *call_args, *call_kwargs;
  if (runner == nullptr ||
      !PyArg_ParseTuple(args, "UO!O!", &name, &PyTuple_Type, &call_args, &PyDict_Type,
                        &call_kwargs)) {
    return nullptr;
  }
  return runner->CallClient(name, call_args, call_kwargs);
}

PyObject* PythonRunner::CallClient(PyObject* name, PyObject* args, PyObject* kwargs) {
  if (active_.empty() || !active_.back().callbacks || !receive_) {
    PyErr_SetString(PyExc_RuntimeError,
                    "pyexec.call: the client registered no functions for this call "
                    "(a client calls them through Run once it has registered some)");
    return nullptr;
  }
  const Active call = active_.back();
  const int depth = limits_.max_value_depth;
  internal::WorkerResponse partial;
  internal::WorkerCallback* callback = partial.mutable_callback();
  const uint32_t seq = ++callback_seq_;
  callback->set_seq(seq);
  if (!DisplayTextToUtf8(name, callback->mutable_name())) return nullptr;
  auto convert = [&](PyObject* object, v1::Value* value, absl::string_view what) {
    if (call.refs != nullptr) call.refs->BeginValue(UINT32_MAX);
    absl::Status converted = PythonToValue(object, depth, value, call.refs);
    if (converted.ok()) return true;
    if (!PyErr_Occurred()) {
      PyErr_Format(PyExc_TypeError, "pyexec.call: %s cannot go to the client: %s",
                   std::string(what).c_str(), std::string(converted.message()).c_str());
    }
    return false;
  };
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); ++i) {
    if (!convert(PyTuple_GET_ITEM(args, i), callback->add_args(),
                 absl::StrCat("argument ", i))) {
      return nullptr;
    }
  }
  PyObject *key, *value;
  Py_ssize_t pos = 0;
  while (PyDict_Next(kwargs, &pos, &key, &value)) {
    std::string key_text;
    if (!PyUnicode_Check(key) || !DisplayTextToUtf8(key, &key_text)) {
      PyErr_SetString(PyExc_TypeError, "pyexec.call: keyword names must be str");
      return nullptr;
    }
    if (!convert(value, &(*callback->mutable_kwargs())[key_text],
                 absl::StrCat("keyword argument '", key_text, "'"))) {
      return nullptr;
    }
  }
  partial.set_id(call.id);
  partial.set_partial(true);
  if (!SendFromCallback(partial)) return nullptr;
  {
    absl::MutexLock lock(&callback_mu_);
    callback_waiting_.insert(seq);
  }
  struct StopWaiting {
    PythonRunner* runner;
    uint32_t seq;
    ~StopWaiting() {
      absl::MutexLock lock(&runner->callback_mu_);
      runner->callback_waiting_.erase(seq);
      runner->callback_answers_.erase(seq);
    }
  } stop_waiting{this, seq};
  // Waits are cut into slices so that a signal meant for the main thread
  // (an interrupt) is seen even while another thread's read holds the
  // socket or this thread waits for that reader.
  constexpr absl::Duration kSlice = absl::Milliseconds(100);
  while (true) {
    // An interrupt (deadline, cancel, Interrupt) ends the wait at once.
    if (PyErr_CheckSignals() < 0) return nullptr;
    if (absl::Now() >= call.deadline) {
      PyErr_Format(PyExc_TimeoutError,
                   "pyexec.call('%U'): the client did not answer before the call's deadline",
                   name);
      return nullptr;
    }
    // This call's answer, if another thread read it, or the reader's role.
    std::optional<internal::CallbackAnswer> mine;
    bool reader = false;
    Py_BEGIN_ALLOW_THREADS
    {
      absl::MutexLock lock(&callback_mu_);
      auto answered_or_free = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(callback_mu_) {
        return callback_answers_.contains(seq) || !callback_reading_;
      };
      callback_mu_.AwaitWithDeadline(absl::Condition(&answered_or_free),
                                     std::min(call.deadline, absl::Now() + kSlice));
      if (auto it = callback_answers_.find(seq); it != callback_answers_.end()) {
        mine = std::move(it->second);
        callback_answers_.erase(it);
      } else if (!callback_reading_) {
        callback_reading_ = reader = true;
      }
    }
    Py_END_ALLOW_THREADS
    if (mine.has_value()) return CallbackResult(*mine, call);
    if (!reader) continue;
    absl::StatusOr<std::string> payload;
    Py_BEGIN_ALLOW_THREADS
    payload = receive_(std::min(call.deadline, absl::Now() + kSlice));
    Py_END_ALLOW_THREADS
    internal::WorkerRequest request;
    const bool parsed = payload.ok() && ParseFramePayload(*payload, &request);
    const bool answer = parsed && request.op_case() == internal::WorkerRequest::kCallbackAnswer;
    {
      // The role goes before anything runs: a nested call run below may
      // itself wait in pyexec.call and must be able to read.
      absl::MutexLock lock(&callback_mu_);
      callback_reading_ = false;
      if (answer && request.callback_answer().seq() != seq &&
          callback_waiting_.contains(request.callback_answer().seq())) {
        callback_answers_[request.callback_answer().seq()] = request.callback_answer();
      }
    }
    if (!payload.ok()) {
      const absl::StatusCode code = payload.status().code();
      // A signal, or the end of a slice: look at signals and the deadline.
      if (code == absl::StatusCode::kCancelled || code == absl::StatusCode::kDeadlineExceeded) {
        continue;
      }
      PyErr_Format(PyExc_OSError, "pyexec.call: %s",
                   std::string(payload.status().message()).c_str());
      return nullptr;
    }
    if (!parsed) {
      PyErr_SetString(PyExc_RuntimeError, "pyexec.call: pyexecd sent a frame that does not parse");
      return nullptr;
    }
    if (answer) {
      // Another thread's answer was handed over above; one to a callback
      // that gave up is dropped.
      if (request.callback_answer().seq() == seq) {
        return CallbackResult(request.callback_answer(), call);
      }
      continue;
    }
    if (request.op_case() == internal::WorkerRequest::OP_NOT_SET) continue;
    // A call the client made while it runs a callback: it runs now, on top
    // of this one, and is answered before the wait goes on.
    internal::WorkerResponse response;
    Handle(request, &response);
    CapResponse(limits_.max_response_bytes, &response);
    if (!SendFromCallback(response)) return nullptr;
  }
}

PyObject* PythonRunner::CallbackResult(const internal::CallbackAnswer& answer,
                                       const Active& call) {
  if (answer.has_error()) {
    PyRef error(PyObject_CallFunction(helpers_->callback_error_type, "ss",
                                      answer.error().type().c_str(),
                                      answer.error().message().c_str()));
    if (error) PyErr_SetObject(helpers_->callback_error_type, error.get());
    return nullptr;
  }
  absl::StatusOr<PyObject*> result =
      ValueToPython(answer.value(), limits_.max_value_depth, call.refs);
  if (!result.ok()) {
    PyErr_Format(PyExc_ValueError, "pyexec.call: the client's answer: %s",
                 std::string(result.status().message()).c_str());
    return nullptr;
  }
  return *result;
}

}  // namespace pyexec
