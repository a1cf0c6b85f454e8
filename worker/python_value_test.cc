#include "worker/python_value.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using v1::Value;

class PythonValueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!Py_IsInitialized()) Py_InitializeEx(0);
    PyRun_SimpleString("import sys; sys.set_int_max_str_digits(0)");
  }

  // Evaluates a Python expression (new reference).
  static PyObject* Py(const char* expression) {
    PyObject* main = PyImport_AddModule("__main__");
    PyObject* globals = PyModule_GetDict(main);
    PyObject* result = PyRun_String(expression, Py_eval_input, globals, globals);
    if (result == nullptr) PyErr_Print();
    return result;
  }

  // Python -> Value -> Python, compared with ==, and the type preserved.
  static void ExpectRoundTrip(const char* expression) {
    PyObject* original = Py(expression);
    ASSERT_NE(original, nullptr);
    Value value;
    ASSERT_TRUE(PythonToValue(original, 64, &value).ok()) << expression;
    absl::StatusOr<PyObject*> back = ValueToPython(value, 64);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(PyObject_RichCompareBool(original, *back, Py_EQ), 1) << expression;
    EXPECT_EQ(Py_TYPE(original), Py_TYPE(*back)) << expression;
    Py_DECREF(original);
    Py_DECREF(*back);
  }
};

TEST_F(PythonValueTest, ScalarsRoundTrip) {
  for (const char* e : {"None", "True", "False", "0", "-1", "2**63-1", "-2**63",
                        "1.5", "-0.0", "float('inf')", "float('-inf')", "''",
                        "'héllo ☃'", "b''", "b'\\x00\\xff'"}) {
    ExpectRoundTrip(e);
  }
}

TEST_F(PythonValueTest, BigIntsUseDecimalStrings) {
  PyObject* big = Py("2**64");
  Value v;
  ASSERT_TRUE(PythonToValue(big, 64, &v).ok());
  EXPECT_EQ(v.big_int(), "18446744073709551616");
  Py_DECREF(big);
  ExpectRoundTrip("-(10**500)");
  ExpectRoundTrip("7**5000");  // past 3.11's default 4300-digit limit
  PyObject* edge = Py("2**63");
  ASSERT_TRUE(PythonToValue(edge, 64, &v).ok());
  EXPECT_EQ(v.kind_case(), Value::kBigInt);
  Py_DECREF(edge);
}

TEST_F(PythonValueTest, NanSurvives) {
  Value v;
  v.set_float_(std::numeric_limits<double>::quiet_NaN());
  absl::StatusOr<PyObject*> o = ValueToPython(v, 64);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(std::isnan(PyFloat_AsDouble(*o)));
  Py_DECREF(*o);
}

TEST_F(PythonValueTest, ContainersRoundTripWithTheirKinds) {
  for (const char* e :
       {"[]", "[1, 'a', None]", "()", "(1,)", "(1, (2, (3,)))", "{}",
        "{'a': 1}", "{1: 'one', (1, 2): [3], None: b'x', 2.5: {}}", "set()",
        "{1, 2, 3}", "[[[[]]]]"}) {
    ExpectRoundTrip(e);
  }
}

TEST_F(PythonValueTest, FrozensetComesBackAsSet) {
  PyObject* fs = Py("frozenset({1, 2})");
  Value v;
  ASSERT_TRUE(PythonToValue(fs, 64, &v).ok());
  EXPECT_TRUE(v.has_set());
  EXPECT_EQ(v.items_size(), 2);
  Py_DECREF(fs);
}

TEST_F(PythonValueTest, SetsInHashablePositionsBecomeFrozensets) {
  ExpectRoundTrip("{frozenset({1, 2}): 'k', (1, frozenset()): 2}");
  ExpectRoundTrip("{frozenset({frozenset({3})})}");
}

TEST_F(PythonValueTest, BytearrayBecomesBytesAndStrStaysStr) {
  PyObject* ba = Py("bytearray(b'ab')");
  Value v;
  ASSERT_TRUE(PythonToValue(ba, 64, &v).ok());
  EXPECT_EQ(v.bytes(), "ab");
  Py_DECREF(ba);
  PyObject* s = Py("'ab'");
  ASSERT_TRUE(PythonToValue(s, 64, &v).ok());
  EXPECT_EQ(v.kind_case(), Value::kStr);
  Py_DECREF(s);
}

TEST_F(PythonValueTest, OtherObjectsAreOpaqueWithTypeAndRepr) {
  PyObject* o = Py("__import__('datetime').date(2024, 1, 2)");
  Value v;
  ASSERT_TRUE(PythonToValue(o, 64, &v).ok());
  EXPECT_EQ(v.opaque().type(), "datetime.date");
  EXPECT_EQ(v.opaque().repr(), "datetime.date(2024, 1, 2)");
  Py_DECREF(o);
  Value back = v;
  EXPECT_EQ(ValueToPython(back, 64).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// PyUnicode_AsUTF8 fails (returns null) for a str with lone surrogates; a
// type name like that must not crash the worker.
TEST_F(PythonValueTest, TypeNameThatIsNotUtf8DoesNotCrash) {
  PyRun_SimpleString(
      "class Odd: pass\n"
      "Odd.__qualname__ = 'Odd\\udc80'\n"
      "Odd.__module__ = 'mod\\udc80'\n");
  PyObject* o = Py("Odd()");
  ASSERT_NE(o, nullptr);
  std::string name = PythonTypeName(o);
  EXPECT_FALSE(name.empty());
  EXPECT_FALSE(PyErr_Occurred());
  Value v;
  EXPECT_TRUE(PythonToValue(o, 64, &v).ok());
  PyErr_Clear();
  Py_DECREF(o);
}

TEST_F(PythonValueTest, ReprThatRaisesIsAnErrorWithAPythonException) {
  PyRun_SimpleString(
      "class Bad:\n    def __repr__(self): raise RuntimeError('no repr')\n");
  PyObject* o = Py("Bad()");
  Value v;
  EXPECT_FALSE(PythonToValue(o, 64, &v).ok());
  ASSERT_TRUE(PyErr_Occurred());
  EXPECT_TRUE(PyErr_ExceptionMatches(PyExc_RuntimeError));
  PyErr_Clear();
  Py_DECREF(o);
}

TEST_F(PythonValueTest, DepthLimitIsExactBothWays) {
  PyObject* ok = Py("eval('[' * 64 + ']' * 64)");
  Value v;
  ASSERT_TRUE(PythonToValue(ok, 64, &v).ok());
  absl::StatusOr<PyObject*> back = ValueToPython(v, 64);
  ASSERT_TRUE(back.ok());
  Py_DECREF(*back);
  EXPECT_EQ(ValueToPython(v, 63).status().code(),
            absl::StatusCode::kInvalidArgument);
  Py_DECREF(ok);

  PyObject* deep = Py("eval('[' * 65 + ']' * 65)");
  Value w;
  EXPECT_FALSE(PythonToValue(deep, 64, &w).ok());
  EXPECT_TRUE(PyErr_ExceptionMatches(PyExc_ValueError));
  PyErr_Clear();
  Py_DECREF(deep);
}

TEST_F(PythonValueTest, SelfReferenceHitsTheDepthLimit) {
  PyRun_SimpleString("loop = []; loop.append(loop)");
  PyObject* loop = Py("loop");
  Value v;
  EXPECT_FALSE(PythonToValue(loop, 64, &v).ok());
  PyErr_Clear();
  Py_DECREF(loop);
}

TEST_F(PythonValueTest, BadRequestValuesAreInvalidArgument) {
  Value empty;
  EXPECT_THAT(ValueToPython(empty, 64).status().message(), HasSubstr("no kind"));
  Value big;
  big.set_big_int("12x");
  EXPECT_EQ(ValueToPython(big, 64).status().code(),
            absl::StatusCode::kInvalidArgument);
  Value unhashable;
  unhashable.set_set(true);
  unhashable.add_items()->set_list(true);
  EXPECT_THAT(ValueToPython(unhashable, 64).status().message(),
              HasSubstr("set element"));
  Value lopsided;
  lopsided.set_dict(true);
  lopsided.add_keys()->set_int_(1);
  EXPECT_THAT(ValueToPython(lopsided, 64).status().message(),
              HasSubstr("1 keys but 0 items"));
  Value stray;
  stray.set_int_(1);
  stray.add_items()->set_int_(2);
  EXPECT_EQ(ValueToPython(stray, 64).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(PyErr_Occurred());
}

TEST_F(PythonValueTest, LoneSurrogatesAreAnErrorNotSilentlyChanged) {
  PyObject* s = Py("'a\\udc80b'");
  Value v;
  EXPECT_FALSE(PythonToValue(s, 64, &v).ok());
  EXPECT_TRUE(PyErr_ExceptionMatches(PyExc_UnicodeEncodeError));
  PyErr_Clear();
  Py_DECREF(s);
  // In display text (an opaque object's repr) they are escaped instead.
  PyRun_SimpleString(
      "class Odd:\n    def __repr__(self): return 'x\\udc80'\n");
  PyObject* o = Py("Odd()");
  Value w;
  ASSERT_TRUE(PythonToValue(o, 64, &w).ok());
  EXPECT_EQ(w.opaque().repr(), "x\\udc80");
  Py_DECREF(o);
}

}  // namespace
}  // namespace pyexec
