#include "clients/cpp/cli_args.h"

#include <cmath>
#include <string>

#include "clients/cpp/value.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Parses `arg` and returns the repr of the result, or "error".
std::string Repr(absl::string_view arg) {
  absl::StatusOr<v1::Value> v = ParseLiteralArg(arg);
  if (!v.ok()) return "error";
  return FormatValue(*v);
}

TEST(ParseLiteralArgTest, Constants) {
  EXPECT_EQ(Repr("None"), "None");
  EXPECT_EQ(Repr("True"), "True");
  EXPECT_EQ(Repr("False"), "False");
  EXPECT_EQ(Repr("true"), "'true'");
  EXPECT_EQ(Repr("none"), "'none'");
}

TEST(ParseLiteralArgTest, Integers) {
  EXPECT_EQ(Repr("42"), "42");
  EXPECT_EQ(Repr("-7"), "-7");
  EXPECT_EQ(Repr("+3"), "3");
  EXPECT_EQ(Repr("0"), "0");
  EXPECT_EQ(ParseLiteralArg("42")->kind_case(), v1::Value::kInt);
  EXPECT_EQ(Repr("123456789012345678901"), "123456789012345678901");
  EXPECT_EQ(ParseLiteralArg("123456789012345678901")->kind_case(),
            v1::Value::kBigInt);
}

TEST(ParseLiteralArgTest, Floats) {
  EXPECT_EQ(Repr("1.5"), "1.5");
  EXPECT_EQ(Repr("-2e3"), "-2000.0");
  EXPECT_EQ(Repr(".5"), "0.5");
  EXPECT_EQ(Repr("1."), "1.0");
  EXPECT_EQ(Repr("1.5E-3"), "0.0015");
  EXPECT_EQ(Repr("nan"), "nan");
  EXPECT_EQ(Repr("inf"), "inf");
  EXPECT_EQ(Repr("-inf"), "-inf");
  EXPECT_EQ(ParseLiteralArg("2e3")->kind_case(), v1::Value::kFloat);
}

TEST(ParseLiteralArgTest, NotQuiteNumbersAreStrings) {
  EXPECT_EQ(Repr("1.2.3"), "'1.2.3'");
  EXPECT_EQ(Repr("."), "'.'");
  EXPECT_EQ(Repr("e5"), "'e5'");
  EXPECT_EQ(Repr("1e"), "'1e'");
  EXPECT_EQ(Repr("0x10"), "'0x10'");
  EXPECT_EQ(Repr("-"), "'-'");
  EXPECT_EQ(Repr("1_000"), "'1_000'");
}

TEST(ParseLiteralArgTest, BareWordsAreStrings) {
  EXPECT_EQ(Repr("hello"), "'hello'");
  EXPECT_EQ(Repr(""), "''");
  EXPECT_EQ(Repr("it's"), "\"it's\"");
  EXPECT_EQ(Repr("[1, 2]"), "'[1, 2]'");
  EXPECT_EQ(Repr("a\\nb"), "'a\\\\nb'");  // No escapes outside quotes.
}

TEST(ParseLiteralArgTest, QuotedStrings) {
  EXPECT_EQ(Repr("'hello'"), "'hello'");
  EXPECT_EQ(Repr("\"hello\""), "'hello'");
  EXPECT_EQ(Repr("'42'"), "'42'");
  EXPECT_EQ(Repr("'None'"), "'None'");
  EXPECT_EQ(Repr("''"), "''");
  EXPECT_EQ(Repr("'a\\nb\\tc'"), "'a\\nb\\tc'");
  EXPECT_EQ(Repr("'it\\'s'"), "\"it's\"");
  EXPECT_EQ(Repr("'\\\\'"), "'\\\\'");
  EXPECT_EQ(Repr("'\\x41\\u00e9\\U0001F600'"), "'A\xc3\xa9\xf0\x9f\x98\x80'");
  EXPECT_EQ(Repr("'\\xff'"), "'\xc3\xbf'");  // U+00FF, not the byte 0xff.
}

TEST(ParseLiteralArgTest, Bytes) {
  EXPECT_EQ(Repr("b'abc'"), "b'abc'");
  EXPECT_EQ(Repr("b\"\\x00\\xff\""), "b'\\x00\\xff'");
  EXPECT_EQ(ParseLiteralArg("b''")->kind_case(), v1::Value::kBytes);
  EXPECT_EQ(Repr("b'\\u0041'"), "error");
  EXPECT_EQ(Repr("bad"), "'bad'");
}

TEST(ParseLiteralArgTest, MalformedQuotedIsAnError) {
  EXPECT_EQ(Repr("'abc"), "error");
  EXPECT_EQ(Repr("'"), "error");
  EXPECT_EQ(Repr("'abc\\'"), "error");
  EXPECT_EQ(Repr("'a'b'"), "error");
  EXPECT_EQ(Repr("'\\q'"), "error");
  EXPECT_EQ(Repr("'\\x4'"), "error");
  EXPECT_EQ(Repr("'\\ud800'"), "error");
  EXPECT_EQ(ParseLiteralArg("'abc").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pyexec
