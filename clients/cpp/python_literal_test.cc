#include "clients/cpp/python_literal.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

// The repr of what `text` parses to, or "error: MESSAGE".
std::string Repr(absl::string_view text) {
  absl::StatusOr<v1::Value> v = ParsePythonLiteral(text);
  if (!v.ok()) return absl::StrCat("error: ", v.status().message());
  return FormatValue(*v);
}

// Just the error message of a parse that must fail.
std::string Error(absl::string_view text) {
  absl::StatusOr<v1::Value> v = ParsePythonLiteral(text);
  EXPECT_FALSE(v.ok()) << text << " parsed as " << FormatValue(*v);
  if (v.ok()) return "";
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(v.status().message());
}

TEST(PythonLiteralTest, Constants) {
  EXPECT_EQ(Repr("None"), "None");
  EXPECT_EQ(Repr("True"), "True");
  EXPECT_EQ(Repr("False"), "False");
  EXPECT_EQ(Repr("  None  "), "None");
  EXPECT_EQ(Repr("None # a comment"), "None");
}

TEST(PythonLiteralTest, Integers) {
  EXPECT_EQ(Repr("42"), "42");
  EXPECT_EQ(Repr("-7"), "-7");
  EXPECT_EQ(Repr("+3"), "3");
  EXPECT_EQ(Repr("- 3"), "-3");
  EXPECT_EQ(Repr("0"), "0");
  EXPECT_EQ(Repr("000"), "0");
  EXPECT_EQ(Repr("-0"), "0");
  EXPECT_EQ(Repr("1_000_000"), "1000000");
  EXPECT_EQ(Repr("0x1F"), "31");
  EXPECT_EQ(Repr("0X_ff"), "255");
  EXPECT_EQ(Repr("0o17"), "15");
  EXPECT_EQ(Repr("0b101"), "5");
  EXPECT_EQ(Repr("-0x10"), "-16");
  EXPECT_EQ(ParsePythonLiteral("42")->kind_case(), v1::Value::kInt);
}

TEST(PythonLiteralTest, BigIntegers) {
  EXPECT_EQ(Repr("18446744073709551616"), "18446744073709551616");
  EXPECT_EQ(ParsePythonLiteral("18446744073709551616")->kind_case(), v1::Value::kBigInt);
  EXPECT_EQ(Repr("9223372036854775807"), "9223372036854775807");
  EXPECT_EQ(ParsePythonLiteral("9223372036854775807")->kind_case(), v1::Value::kInt);
  EXPECT_EQ(ParsePythonLiteral("9223372036854775808")->kind_case(), v1::Value::kBigInt);
  EXPECT_EQ(ParsePythonLiteral("-9223372036854775808")->kind_case(), v1::Value::kInt);
  EXPECT_EQ(Repr("-123456789012345678901234567890"), "-123456789012345678901234567890");
  EXPECT_EQ(Repr("0xffffffffffffffffffffffffffffffff"),
            "340282366920938463463374607431768211455");
  EXPECT_EQ(Repr("0b1" + std::string(64, '0')), "18446744073709551616");
  EXPECT_EQ(Repr("0o1" + std::string(30, '7')), "2475880078570760549798248447");
  // Decimal literals pass through unchanged, however long.
  const std::string huge(5000, '7');
  EXPECT_EQ(Repr(huge), huge);
}

TEST(PythonLiteralTest, IntegerPowersAreFolded) {
  EXPECT_EQ(Repr("2**64"), "18446744073709551616");
  EXPECT_EQ(Repr("2 ** 64"), "18446744073709551616");
  EXPECT_EQ(Repr("-2**63"), "-9223372036854775808");  // -(2**63), as in Python
  EXPECT_EQ(ParsePythonLiteral("-2**63")->kind_case(), v1::Value::kInt);
  EXPECT_EQ(Repr("10**30"), "1000000000000000000000000000000");
  EXPECT_EQ(Repr("0x10**2"), "256");
  EXPECT_EQ(Repr("2**0x10"), "65536");
  EXPECT_EQ(Repr("0**0"), "1");
  EXPECT_EQ(Repr("0**5"), "0");
  EXPECT_EQ(Repr("1**99999999999999999999999"), "1");
  EXPECT_EQ(Repr("7**0"), "1");
  EXPECT_EQ(Repr("3**40"), "12157665459056928801");
  EXPECT_EQ(Repr("[2**64, -2**64]"), "[18446744073709551616, -18446744073709551616]");
  EXPECT_EQ(Repr("{2**3: 1}"), "{8: 1}");
  // 2**14000 has 4215 digits; 2**14300 has 4305.
  EXPECT_EQ(Repr("2**14000").size(), 4215u);
  EXPECT_THAT(Error("2**14300"), HasSubstr("at most 4300"));
  EXPECT_THAT(Error("10**4300"), HasSubstr("at most 4300"));  // 4301 digits
  EXPECT_EQ(Repr("10**4299").size(), 4300u);
  EXPECT_THAT(Error("2**99999999999999999999999"), HasSubstr("far more than"));
}

TEST(PythonLiteralTest, BadPowers) {
  EXPECT_THAT(Error("2**-1"), HasSubstr("non-negative integer"));
  EXPECT_THAT(Error("2**1.5"), HasSubstr("non-negative integer"));
  EXPECT_THAT(Error("2.0**2"), HasSubstr("integer operands"));
  EXPECT_THAT(Error("2**"), HasSubstr("non-negative integer"));
  EXPECT_THAT(Error("2**x"), HasSubstr("non-negative integer"));
  EXPECT_THAT(Error("2**3**2"), HasSubstr("only one '**'"));
  EXPECT_THAT(Error("2*3"), HasSubstr("unexpected text"));
  EXPECT_THAT(Error("1+2"), HasSubstr("unexpected text"));
}

TEST(PythonLiteralTest, Floats) {
  EXPECT_EQ(Repr("1.5"), "1.5");
  EXPECT_EQ(Repr("-2e3"), "-2000.0");
  EXPECT_EQ(Repr(".5"), "0.5");
  EXPECT_EQ(Repr("1."), "1.0");
  EXPECT_EQ(Repr("1.e2"), "100.0");
  EXPECT_EQ(Repr("1.5E-3"), "0.0015");
  EXPECT_EQ(Repr("1_0.2_5"), "10.25");
  EXPECT_EQ(Repr("1e1_0"), "10000000000.0");
  EXPECT_EQ(Repr("09.5"), "9.5");
  EXPECT_EQ(Repr("0e0"), "0.0");
  EXPECT_EQ(Repr("-0.0"), "-0.0");
  EXPECT_EQ(Repr("1e400"), "inf");
  EXPECT_EQ(Repr("1e-400"), "0.0");
  EXPECT_EQ(Repr("0.1"), "0.1");
  EXPECT_EQ(Repr("nan"), "nan");
  EXPECT_EQ(Repr("inf"), "inf");
  EXPECT_EQ(Repr("-inf"), "-inf");
  EXPECT_EQ(Repr("+inf"), "inf");
  EXPECT_EQ(Repr("-nan"), "nan");
  EXPECT_EQ(Repr("[nan, -inf]"), "[nan, -inf]");
  EXPECT_TRUE(std::isnan(ParsePythonLiteral("nan")->float_()));
  EXPECT_EQ(ParsePythonLiteral("2e3")->kind_case(), v1::Value::kFloat);
}

TEST(PythonLiteralTest, BadNumbers) {
  EXPECT_THAT(Error("01"), HasSubstr("leading zeros"));
  EXPECT_THAT(Error("1__0"), HasSubstr("invalid decimal literal"));
  EXPECT_THAT(Error("1_"), HasSubstr("invalid decimal literal"));
  EXPECT_THAT(Error("1e"), HasSubstr("invalid decimal literal"));
  EXPECT_THAT(Error("1e+"), HasSubstr("invalid decimal literal"));
  EXPECT_THAT(Error("1abc"), HasSubstr("invalid decimal literal"));
  EXPECT_THAT(Error("0x"), HasSubstr("invalid hexadecimal literal"));
  EXPECT_THAT(Error("0xg"), HasSubstr("invalid hexadecimal literal"));
  EXPECT_THAT(Error("0b102"), HasSubstr("invalid digit '2' in binary literal"));
  EXPECT_THAT(Error("0o8"), HasSubstr("invalid digit '8' in octal literal"));
  EXPECT_THAT(Error("0x__1"), HasSubstr("invalid hexadecimal literal"));
  EXPECT_THAT(Error("1j"), HasSubstr("complex"));
  EXPECT_THAT(Error("1.5J"), HasSubstr("complex"));
  EXPECT_THAT(Error("1.2.3"), HasSubstr("unexpected text"));
  EXPECT_THAT(Error("--1"), HasSubstr("expected a number after '-'"));
  EXPECT_THAT(Error("-True"), HasSubstr("a sign needs a number"));
  EXPECT_THAT(Error("-"), HasSubstr("expected a number"));
  EXPECT_THAT(Error("0x" + std::string(4000, 'f')), HasSubstr("at most 4300"));
}

TEST(PythonLiteralTest, Strings) {
  EXPECT_EQ(Repr("'hello'"), "'hello'");
  EXPECT_EQ(Repr("\"hello\""), "'hello'");
  EXPECT_EQ(Repr("u'hello'"), "'hello'");
  EXPECT_EQ(Repr("'42'"), "'42'");
  EXPECT_EQ(Repr("''"), "''");
  EXPECT_EQ(Repr("'it\\'s'"), "\"it's\"");
  EXPECT_EQ(Repr("\"it's\""), "\"it's\"");
  EXPECT_EQ(Repr("'a\\nb\\tc\\\\'"), "'a\\nb\\tc\\\\'");
  EXPECT_EQ(Repr("'\\a\\b\\f\\v\\r'"), "'\\x07\\x08\\x0c\\x0b\\r'");
  EXPECT_EQ(Repr("'\\0\\101\\1010'"), "'\\x00AA0'");
  EXPECT_EQ(Repr("'\\777'"), "'\xc7\xbf'");  // U+01FF, as in Python
  EXPECT_EQ(Repr("'\\x41\\u00e9\\U0001F600'"), "'A\xc3\xa9\xf0\x9f\x98\x80'");
  EXPECT_EQ(Repr("'\\xff'"), "'\xc3\xbf'");  // U+00FF, not the byte 0xff
  EXPECT_EQ(Repr("'\\q\\d'"), "'\\\\q\\\\d'");  // Unknown escapes keep the backslash.
  EXPECT_EQ(Repr("'a\\\nb'"), "'ab'");       // backslash-newline continues
  EXPECT_EQ(Repr("'''a\nb'''"), "'a\\nb'");
  EXPECT_EQ(Repr("\"\"\"x\"y\"\"\""), "'x\"y'");
  EXPECT_EQ(Repr("'''a\r\nb'''"), "'a\\nb'");  // universal newlines
  EXPECT_EQ(Repr("'caf\xc3\xa9'"), "'caf\xc3\xa9'");
  EXPECT_EQ(Repr("r'\\n\\d'"), "'\\\\n\\\\d'");
  EXPECT_EQ(Repr("R'\\''"), "\"\\\\'\"");  // raw: \' keeps both characters
  EXPECT_EQ(Repr("'a' \"b\"  'c'"), "'abc'");
  EXPECT_EQ(Repr("('a'\n 'b')"), "'ab'");
}

TEST(PythonLiteralTest, BadStrings) {
  EXPECT_THAT(Error("'abc"), HasSubstr("unterminated string literal (column 1)"));
  EXPECT_THAT(Error("'"), HasSubstr("unterminated string literal"));
  EXPECT_THAT(Error("'abc\\'"), HasSubstr("unterminated string literal"));
  EXPECT_THAT(Error("'a\nb'"), HasSubstr("unterminated string literal"));
  EXPECT_THAT(Error("'''abc''"), HasSubstr("unterminated triple-quoted"));
  EXPECT_THAT(Error("r'\\'"), HasSubstr("unterminated string literal"));
  EXPECT_THAT(Error("'a'b'"), HasSubstr("cannot mix bytes and nonbytes"));  // 'a' b'
  EXPECT_THAT(Error("'a'x'"), HasSubstr("unexpected text"));
  EXPECT_THAT(Error("'\\x4'"), HasSubstr("truncated \\x escape"));
  EXPECT_THAT(Error("'\\u12'"), HasSubstr("truncated \\u escape"));
  EXPECT_THAT(Error("'\\ud800'"), HasSubstr("lone surrogate"));
  EXPECT_THAT(Error("'\\U00110000'"), HasSubstr("illegal Unicode character"));
  EXPECT_THAT(Error("'\\N{BULLET}'"), HasSubstr("\\N{...}"));
  EXPECT_THAT(Error("f'{x}'"), HasSubstr("f-strings are not literals"));
  EXPECT_THAT(Error("b'a' 'b'"), HasSubstr("cannot mix bytes and nonbytes"));
  EXPECT_THAT(Error("'a' b'b'"), HasSubstr("cannot mix bytes and nonbytes"));
  EXPECT_THAT(Error("'\xff'"), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(Error(std::string("'a\0b'", 5)), HasSubstr("NUL"));
  EXPECT_THAT(Error("ur'x'"), HasSubstr("name 'ur' is not a literal"));
}

TEST(PythonLiteralTest, Bytes) {
  EXPECT_EQ(Repr("b'abc'"), "b'abc'");
  EXPECT_EQ(Repr("B\"\\x00\\xff\""), "b'\\x00\\xff'");
  EXPECT_EQ(Repr("b'\\377\\0'"), "b'\\xff\\x00'");
  EXPECT_EQ(Repr("b'\\u0041'"), "b'\\\\u0041'");  // no \u in bytes: kept, as in Python
  EXPECT_EQ(Repr("rb'\\x00'"), "b'\\\\x00'");
  EXPECT_EQ(Repr("Br'a'"), "b'a'");
  EXPECT_EQ(Repr("b'a' b\"b\""), "b'ab'");
  EXPECT_EQ(ParsePythonLiteral("b''")->kind_case(), v1::Value::kBytes);
  EXPECT_THAT(Error("b'caf\xc3\xa9'"), HasSubstr("only contain ASCII"));
  EXPECT_THAT(Error("b'\\777'"), HasSubstr("out of range for bytes"));
}

TEST(PythonLiteralTest, Containers) {
  EXPECT_EQ(Repr("[3, 1]"), "[3, 1]");
  EXPECT_EQ(Repr("[]"), "[]");
  EXPECT_EQ(Repr("[1,]"), "[1]");
  EXPECT_EQ(Repr("[ 1 ,\n 'a' , [None] ]"), "[1, 'a', [None]]");
  EXPECT_EQ(Repr("()"), "()");
  EXPECT_EQ(Repr("(1)"), "1");
  EXPECT_EQ(Repr("((1))"), "1");
  EXPECT_EQ(Repr("(1,)"), "(1,)");
  EXPECT_EQ(Repr("(1, 2,)"), "(1, 2)");
  EXPECT_EQ(Repr("{}"), "{}");
  EXPECT_EQ(Repr("{'a': 1, 2: [b'x'], (1, 2): None,}"), "{'a': 1, 2: [b'x'], (1, 2): None}");
  EXPECT_EQ(Repr("{1, 2}"), "{1, 2}");
  EXPECT_EQ(Repr("{1,}"), "{1}");
  EXPECT_EQ(Repr("set()"), "set()");
  EXPECT_EQ(Repr("set ( )"), "set()");
  EXPECT_EQ(Repr("[set(), {(1, 'a')}]"), "[set(), {(1, 'a')}]");
  EXPECT_EQ(Repr("{'k': {'n': [1, (2,)]}}"), "{'k': {'n': [1, (2,)]}}");
  EXPECT_EQ(Repr("[1, # one\n 2]"), "[1, 2]");
  EXPECT_EQ(Repr("[1, \\\n 2]"), "[1, 2]");
  EXPECT_EQ(ParsePythonLiteral("{1: 2}")->kind_case(), v1::Value::kDict);
  EXPECT_EQ(ParsePythonLiteral("{1}")->kind_case(), v1::Value::kSet);
  EXPECT_EQ(ParsePythonLiteral("(1,)")->kind_case(), v1::Value::kTuple);
}

TEST(PythonLiteralTest, BadContainers) {
  EXPECT_THAT(Error("[1, 2"), HasSubstr("'[' was never closed (column 1)"));
  EXPECT_THAT(Error("[1, 2,"), HasSubstr("'[' was never closed"));
  EXPECT_THAT(Error("(1, 2"), HasSubstr("'(' was never closed (column 1)"));
  EXPECT_THAT(Error("{1: 2"), HasSubstr("'{' was never closed"));
  EXPECT_THAT(Error("{1: "), HasSubstr("expected a value"));
  EXPECT_THAT(Error("[1 2]"), HasSubstr("expected ',' or ']' (column 4)"));
  EXPECT_THAT(Error("[,]"), HasSubstr("unexpected ','"));
  EXPECT_THAT(Error("[1,,2]"), HasSubstr("unexpected ','"));
  EXPECT_THAT(Error("(,)"), HasSubstr("unexpected ','"));
  EXPECT_THAT(Error("[1]]"), HasSubstr("unexpected text"));
  EXPECT_THAT(Error("{1: 2, 3}"), HasSubstr("expected ':'"));
  EXPECT_THAT(Error("{1, 2: 3}"), HasSubstr("expected ',' or '}'"));
  EXPECT_THAT(Error("{[1]: 2}"), HasSubstr("unhashable type: 'list' as a dict key"));
  EXPECT_THAT(Error("{(1, {2}): 2}"), HasSubstr("unhashable type: 'set'"));
  EXPECT_THAT(Error("{{}}"), HasSubstr("unhashable type: 'dict' as a set element"));
  EXPECT_THAT(Error("{1, [2]}"), HasSubstr("unhashable type: 'list' as a set element"));
  EXPECT_THAT(Error("{**a}"), HasSubstr("unpacking"));
  EXPECT_THAT(Error("[*a]"), HasSubstr("unexpected '*'"));
  EXPECT_THAT(Error("set(1)"), HasSubstr("only set()"));
  EXPECT_THAT(Error("[x for x in y]"), HasSubstr("name 'x' is not a literal"));
}

TEST(PythonLiteralTest, NamesAndOtherText) {
  EXPECT_THAT(Error(""), HasSubstr("empty literal"));
  EXPECT_THAT(Error("   "), HasSubstr("empty literal"));
  EXPECT_THAT(Error("# only a comment"), HasSubstr("empty literal"));
  EXPECT_THAT(Error("hello"), HasSubstr("name 'hello' is not a literal"));
  EXPECT_THAT(Error("true"), HasSubstr("(Python spells it True)"));
  EXPECT_THAT(Error("[false]"), HasSubstr("(Python spells it False)"));
  EXPECT_THAT(Error("{'a': null}"), HasSubstr("(Python spells it None)"));
  EXPECT_THAT(Error("x.y"), HasSubstr("name 'x' is not a literal"));
  EXPECT_THAT(Error("..."), HasSubstr("unexpected '.'"));
  EXPECT_THAT(Error("@"), HasSubstr("unexpected '@'"));
  EXPECT_THAT(Error("\x01"), HasSubstr("unexpected character \\x01"));
  EXPECT_THAT(Error("None None"), HasSubstr("unexpected text after the literal (column 6)"));
}

TEST(PythonLiteralTest, NestingIsBounded) {
  const std::string ok = std::string(kMaxLiteralDepth, '[') + std::string(kMaxLiteralDepth, ']');
  EXPECT_TRUE(ParsePythonLiteral(ok).ok());
  const std::string deep =
      std::string(kMaxLiteralDepth + 1, '[') + "1" + std::string(kMaxLiteralDepth + 1, ']');
  EXPECT_THAT(Error(deep), HasSubstr("nested deeper than 100 levels"));
  // Far deeper input fails the same way, without exhausting the stack.
  EXPECT_THAT(Error(std::string(1000000, '(')), HasSubstr("nested deeper"));
  EXPECT_THAT(Error(std::string(1000000, '{')), HasSubstr("nested deeper"));
}

// Every Value the parser can produce prints (FormatValue, Python's repr)
// as a literal that parses back to the same Value.
TEST(PythonLiteralTest, ReprRoundTrips) {
  for (const char* text :
       {"None", "[1, -2, 3.25, 'x', b'\\x00\\xff', None, True]", "{'k': (1,), 2: {3}}",
        "18446744073709551616", "-18446744073709551616", "[nan, inf, -inf, -0.0, 1e-300]",
        "'\\x00\\t\\u200b\\U0001f600 \\'\"'", "(set(), {}, [], ())", "5e-324",
        "1.7976931348623157e308", "0.1"}) {
    absl::StatusOr<v1::Value> v = ParsePythonLiteral(text);
    ASSERT_TRUE(v.ok()) << text << ": " << v.status();
    const std::string repr = FormatValue(*v);
    absl::StatusOr<v1::Value> again = ParsePythonLiteral(repr);
    ASSERT_TRUE(again.ok()) << repr << ": " << again.status();
    EXPECT_EQ(FormatValue(*again), repr);
    if (repr.find("nan") == std::string::npos) {
      EXPECT_EQ(again->SerializeAsString(), v->SerializeAsString()) << repr;
    }
  }
}

// Robustness: random values printed and then damaged (bytes deleted,
// duplicated, replaced, swapped), and random bytes, never crash the parser;
// every outcome is a Value or an INVALID_ARGUMENT with a message.
class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string Literal(int depth = 0) {
    switch (Pick(depth < 4 ? 12 : 7)) {
      case 0:
        return "None";
      case 1:
        return Pick(2) ? "True" : "False";
      case 2:
        return absl::StrCat(static_cast<int64_t>(rng_()) - (1 << 30));
      case 3:
        return absl::StrCat(rng_(), rng_(), rng_());
      case 4:
        return absl::StrCat(Pick(2) ? "-" : "", Pick(50), ".", Pick(1000), "e", Pick(40));
      case 5:
        return Pick(2) ? "'a\\n\\x41\\u00e9\"'" : "b'\\x00z'";
      case 6:
        return absl::StrCat(Pick(9) + 2, "**", Pick(200));
      case 7:
        return absl::StrCat("[", Items(depth), "]");
      case 8:
        return absl::StrCat("(", Items(depth), ",)");
      case 9:
        return absl::StrCat("{", Pick(1000), ": ", Literal(depth + 1), ", 'k': ",
                            Literal(depth + 1), "}");
      case 10:
        return absl::StrCat("{", Pick(100), ", ", Pick(100), "}");
      default:
        return Pick(2) ? "set()" : "nan";
    }
  }

  std::string Damage(std::string s) {
    const int edits = 1 + Pick(3);
    for (int i = 0; i < edits && !s.empty(); ++i) {
      const size_t at = Pick(s.size());
      switch (Pick(4)) {
        case 0:
          s.erase(at, 1 + Pick(3));
          break;
        case 1:
          s.insert(at, s.substr(Pick(s.size()), 1 + Pick(4)));
          break;
        case 2:
          s[at] = static_cast<char>(rng_());
          break;
        default:
          s[at] = "[](){}:,'\"\\*_.ejxb0 \n#"[Pick(22)];
          break;
      }
    }
    return s;
  }

  std::string Bytes() {
    std::string s(Pick(40), '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }

  size_t Pick(size_t n) { return rng_() % n; }

 private:
  std::string Items(int depth) {
    std::string out;
    const int n = 1 + Pick(4);
    for (int i = 0; i < n; ++i) absl::StrAppend(&out, i ? ", " : "", Literal(depth + 1));
    return out;
  }

  std::mt19937 rng_;
};

void ExpectValueOrCleanError(const std::string& text) {
  absl::StatusOr<v1::Value> v = ParsePythonLiteral(text);
  if (v.ok()) {
    // Whatever parses prints as a literal that parses again.
    absl::StatusOr<v1::Value> again = ParsePythonLiteral(FormatValue(*v));
    EXPECT_TRUE(again.ok()) << "repr of a parse of '" << text << "' does not parse: "
                            << again.status();
  } else {
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_FALSE(v.status().message().empty()) << text;
  }
}

TEST(PythonLiteralRobustnessTest, GeneratedLiteralsParseAndRoundTrip) {
  Generator gen(1);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = gen.Literal();
    absl::StatusOr<v1::Value> v = ParsePythonLiteral(text);
    ASSERT_TRUE(v.ok()) << text << ": " << v.status();
    absl::StatusOr<v1::Value> again = ParsePythonLiteral(FormatValue(*v));
    ASSERT_TRUE(again.ok()) << FormatValue(*v) << ": " << again.status();
    EXPECT_EQ(FormatValue(*again), FormatValue(*v));
  }
}

TEST(PythonLiteralRobustnessTest, DamagedLiteralsAndRandomBytesNeverCrash) {
  Generator gen(2);
  for (int i = 0; i < 20000; ++i) {
    ExpectValueOrCleanError(gen.Damage(gen.Literal()));
    ExpectValueOrCleanError(gen.Bytes());
  }
}

}  // namespace
}  // namespace pyexec
