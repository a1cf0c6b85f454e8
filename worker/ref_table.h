// The live objects of a bound session, by ref id (pyexec.v1.Ref): what a
// worker hands out when a result goes back as a ref, and resolves when a
// request names one.

#ifndef PYEXEC_WORKER_REF_TABLE_H_
#define PYEXEC_WORKER_REF_TABLE_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "pyexec/v1/pyexec.pb.h"
#include "worker/py_ref.h"
#include "worker/python_value.h"

namespace pyexec {

// Ids are 96 random bits
// from getrandom(2), so that a ref cannot be guessed; each worker holds only
// its own session's objects, so no id reaches another session's object.
class RefTable final : public RefHooks {
 public:
  ~RefTable() override { Clear(); }

  // Starts converting one result: refs made from now on can be rolled back,
  // and at most `max_refs` may be live.
  void BeginValue(uint32_t max_refs) {
    max_refs_ = max_refs;
    made_.clear();
    limit_hit_ = false;
  }
  // Drops the refs made since BeginValue (the result was not delivered).
  void RollBack() {
    for (const std::string& id : made_) Drop(id);
    made_.clear();
  }
  bool limit_hit() const { return limit_hit_; }
  uint32_t max_refs() const { return max_refs_; }

  absl::StatusOr<PyObject*> Resolve(const std::string& id) override {
    auto it = objects_.find(id);
    if (it == objects_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown ref '", id.substr(0, 24),
          "': released, made by another session, or never made"));
    }
    Py_INCREF(it->second);
    return it->second;
  }

  // Holds `object` under a new random id and describes it in `out`.
  absl::Status Make(PyObject* object, v1::Ref* out) override;

  // Drops `id` if live; returns whether it was.
  bool Drop(const std::string& id) {
    auto it = objects_.find(id);
    if (it == objects_.end()) return false;
    PyObject* object = it->second;
    objects_.erase(it);
    Py_DECREF(object);  // may run __del__, hence after the erase
    return true;
  }

  void Clear() {
    while (!objects_.empty()) Drop(objects_.begin()->first);
  }

  // A new dict of the live refs, {id: object}; null with an exception.
  PyObject* ToDict() const {
    PyRef dict(PyDict_New());
    if (!dict) return nullptr;
    for (const auto& [id, object] : objects_) {
      PyRef key(PyUnicode_FromStringAndSize(id.data(), id.size()));
      if (!key || PyDict_SetItem(dict.get(), key.get(), object) < 0) return nullptr;
    }
    return dict.release();
  }

  // Holds `object` under `id` (a ref a restore brings back), in place of
  // any object held under that id.
  void Adopt(const std::string& id, PyObject* object) {
    Py_INCREF(object);
    PyObject*& slot = objects_[id];
    PyObject* old = slot;
    slot = object;
    Py_XDECREF(old);  // may run __del__, hence after the table is updated
  }

 private:
  absl::flat_hash_map<std::string, PyObject*> objects_;
  std::vector<std::string> made_;
  uint32_t max_refs_ = 0;
  bool limit_hit_ = false;
};

}  // namespace pyexec

#endif  // PYEXEC_WORKER_REF_TABLE_H_
