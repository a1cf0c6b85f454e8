#include "clients/cpp/cli_args.h"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

// Parses `arg` and returns the repr of the result, or "error: MESSAGE".
std::string Repr(absl::string_view arg) {
  absl::StatusOr<v1::Value> v = ParseLiteralArg(arg);
  if (!v.ok()) return "error: " + std::string(v.status().message());
  return FormatValue(*v);
}

// The reprs of ParseCallArgs(args), joined by " | ", or "error: MESSAGE".
std::string CallArgs(const std::vector<std::string>& args) {
  absl::StatusOr<std::vector<v1::Value>> values = ParseCallArgs(args);
  if (!values.ok()) return "error: " + std::string(values.status().message());
  return absl::StrJoin(*values, " | ", [](std::string* out, const v1::Value& v) {
    out->append(FormatValue(v));
  });
}

TEST(ParseLiteralArgTest, LiteralsAreParsed) {
  EXPECT_EQ(Repr("None"), "None");
  EXPECT_EQ(Repr("True"), "True");
  EXPECT_EQ(Repr("42"), "42");
  EXPECT_EQ(Repr("18446744073709551616"), "18446744073709551616");
  EXPECT_EQ(Repr("2**64"), "18446744073709551616");
  EXPECT_EQ(Repr("1.5"), "1.5");
  EXPECT_EQ(Repr("nan"), "nan");
  EXPECT_EQ(Repr("inf"), "inf");
  EXPECT_EQ(Repr("'42'"), "'42'");
  EXPECT_EQ(Repr("b'\\x00'"), "b'\\x00'");
  EXPECT_EQ(Repr("[3,1]"), "[3, 1]");
  EXPECT_EQ(Repr("(1,)"), "(1,)");
  EXPECT_EQ(Repr("1,2"), "(1, 2)");
  EXPECT_EQ(Repr("{'a': [1, {2}]}"), "{'a': [1, {2}]}");
  EXPECT_EQ(Repr("set()"), "set()");
  EXPECT_EQ(Repr(" [1] "), "[1]");
  EXPECT_EQ(Repr("0x10"), "16");
  EXPECT_EQ(Repr("1_000"), "1000");
}

TEST(ParseLiteralArgTest, BareWordsAreStrings) {
  EXPECT_EQ(Repr("hello"), "'hello'");
  EXPECT_EQ(Repr(""), "''");
  EXPECT_EQ(Repr("  "), "'  '");
  EXPECT_EQ(Repr("hello world"), "'hello world'");
  EXPECT_EQ(Repr("it's"), "\"it's\"");
  EXPECT_EQ(Repr("true"), "'true'");
  EXPECT_EQ(Repr("none"), "'none'");
  EXPECT_EQ(Repr("a\\nb"), "'a\\\\nb'");  // no escapes outside quotes
  EXPECT_EQ(Repr("caf\xc3\xa9"), "'caf\xc3\xa9'");
  // Not numbers: versions, dates, times, ordinals, math.
  EXPECT_EQ(Repr("1.2.3"), "'1.2.3'");
  EXPECT_EQ(Repr("2024-01-01"), "'2024-01-01'");
  EXPECT_EQ(Repr("10:30"), "'10:30'");
  EXPECT_EQ(Repr("3rd"), "'3rd'");
  EXPECT_EQ(Repr("1e"), "'1e'");
  EXPECT_EQ(Repr("1j"), "'1j'");
  EXPECT_EQ(Repr("007"), "'007'");
  EXPECT_EQ(Repr("1+2"), "'1+2'");
  EXPECT_EQ(Repr("-"), "'-'");
  EXPECT_EQ(Repr("."), "'.'");
  EXPECT_EQ(Repr("x**2"), "'x**2'");
  EXPECT_EQ(Repr("/tmp/a b"), "'/tmp/a b'");
  EXPECT_EQ(Repr("#tag"), "'#tag'");
}

TEST(ParseLiteralArgTest, BrokenLiteralsAreErrors) {
  EXPECT_THAT(Repr("[1, 2"), HasSubstr("error: '[' was never closed"));
  EXPECT_THAT(Repr("(1"), HasSubstr("error: '(' was never closed"));
  EXPECT_THAT(Repr("{'a': true}"), HasSubstr("Python spells it True"));
  EXPECT_THAT(Repr("[a-z]+"), HasSubstr("error: name 'a' is not a literal"));
  EXPECT_THAT(Repr("'abc"), HasSubstr("error: unterminated string literal"));
  EXPECT_THAT(Repr("b'abc"), HasSubstr("error: unterminated string literal"));
  EXPECT_THAT(Repr("r\"x"), HasSubstr("error: unterminated string literal"));
  EXPECT_THAT(Repr("f'{x}'"), HasSubstr("error: f-strings"));
  EXPECT_THAT(Repr("'a'b"), HasSubstr("error: unexpected text"));
  EXPECT_THAT(Repr("2**-1"), HasSubstr("error: the exponent"));
  EXPECT_THAT(Repr("2 ** 0.5"), HasSubstr("error: the exponent"));
  EXPECT_THAT(Repr("1.5**2"), HasSubstr("error: '**' takes integer operands"));
  EXPECT_THAT(Repr("2**99999"), HasSubstr("at most 4300"));
  EXPECT_THAT(Repr(std::string(200, '[')), HasSubstr("nested deeper"));
  EXPECT_THAT(Repr("\xff"), HasSubstr("error: not valid UTF-8"));
}

TEST(ParseCallArgsTest, StrMarkerAppliesToTheNextArgumentOnly) {
  EXPECT_EQ(CallArgs({}), "");
  EXPECT_EQ(CallArgs({"[3,1]", "hello", "12"}), "[3, 1] | 'hello' | 12");
  EXPECT_EQ(CallArgs({"--str", "42", "42"}), "'42' | 42");
  EXPECT_EQ(CallArgs({"--str", "[a-z]+", "abc"}), "'[a-z]+' | 'abc'");
  EXPECT_EQ(CallArgs({"--str", "'q'"}), "\"'q'\"");
  EXPECT_EQ(CallArgs({"--str", "--str"}), "'--str'");
  EXPECT_EQ(CallArgs({"--str", "-3", "--str", "None"}), "'-3' | 'None'");
  EXPECT_EQ(CallArgs({"--str", ""}), "''");
  EXPECT_EQ(CallArgs({"--str=42", "--str=", "--str=--str"}), "'42' | '' | '--str'");
  EXPECT_EQ(CallArgs({"--strx"}), "'--strx'");  // a bare word
}

TEST(ParseCallArgsTest, ErrorsNameTheArgument) {
  EXPECT_EQ(CallArgs({"1", "[1,"}),
            "error: argument 2 ([1,) is not a valid Python literal: '[' was never closed "
            "(column 1); put --str before it to pass it as a str");
  EXPECT_EQ(CallArgs({"--str", "x", "(1"}).substr(0, 18), "error: argument 2 ");
  EXPECT_THAT(CallArgs({"1", "--str"}), HasSubstr("--str must be followed by"));
  EXPECT_THAT(CallArgs({"--str", "\xff"}), HasSubstr("argument 1 is not valid UTF-8"));
  // A long argument is cut in the message.
  const std::string long_arg = "[" + std::string(100, '1');
  EXPECT_THAT(CallArgs({long_arg}), HasSubstr("(" + long_arg.substr(0, 57) + "...)"));
}

}  // namespace
}  // namespace pyexec
