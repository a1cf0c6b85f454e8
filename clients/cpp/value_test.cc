#include "clients/cpp/value.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

// Every expected string below is what CPython 3.11's repr() prints.

TEST(FormatValueTest, Scalars) {
  EXPECT_EQ(FormatValue(MakeNone()), "None");
  EXPECT_EQ(FormatValue(MakeBool(true)), "True");
  EXPECT_EQ(FormatValue(MakeBool(false)), "False");
  EXPECT_EQ(FormatValue(MakeInt(1)), "1");
  EXPECT_EQ(FormatValue(MakeInt(-42)), "-42");
  EXPECT_EQ(FormatValue(MakeInt(std::numeric_limits<int64_t>::min())),
            "-9223372036854775808");
}

TEST(FormatValueTest, UnsetKind) { EXPECT_EQ(FormatValue(v1::Value()), "<unset>"); }

TEST(MakeBigIntTest, LargeStaysBig) {
  absl::StatusOr<v1::Value> v = MakeBigInt("12345678901234567890");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind_case(), v1::Value::kBigInt);
  EXPECT_EQ(FormatValue(*v), "12345678901234567890");
}

TEST(MakeBigIntTest, NegativeAndCanonical) {
  absl::StatusOr<v1::Value> v = MakeBigInt("-000099999999999999999999");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(FormatValue(*v), "-99999999999999999999");
  v = MakeBigInt("+18446744073709551616");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(FormatValue(*v), "18446744073709551616");
}

TEST(MakeBigIntTest, FitsInInt64BecomesInt) {
  absl::StatusOr<v1::Value> v = MakeBigInt("-9223372036854775808");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->kind_case(), v1::Value::kInt);
  EXPECT_EQ(v->int_(), std::numeric_limits<int64_t>::min());
  v = MakeBigInt("9223372036854775808");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->kind_case(), v1::Value::kBigInt);
}

TEST(MakeBigIntTest, RejectsNonDigits) {
  for (const char* bad : {"", "-", "1.5", "12a", " 1", "0x10", "1e5"}) {
    absl::StatusOr<v1::Value> v = MakeBigInt(bad);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(FormatFloatTest, ShortestRoundTrip) {
  EXPECT_EQ(FormatFloat(1.5), "1.5");
  EXPECT_EQ(FormatFloat(1.0), "1.0");
  EXPECT_EQ(FormatFloat(0.1), "0.1");
  EXPECT_EQ(FormatFloat(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatFloat(-2.5), "-2.5");
  EXPECT_EQ(FormatFloat(100.0), "100.0");
  EXPECT_EQ(FormatFloat(123456.789), "123456.789");
  EXPECT_EQ(FormatFloat(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatFloat(3.141592653589793), "3.141592653589793");
}

TEST(FormatFloatTest, ZeroesKeepSign) {
  EXPECT_EQ(FormatFloat(0.0), "0.0");
  EXPECT_EQ(FormatFloat(-0.0), "-0.0");
}

TEST(FormatFloatTest, NonFinite) {
  EXPECT_EQ(FormatFloat(std::nan("")), "nan");
  EXPECT_EQ(FormatFloat(-std::nan("")), "nan");
  EXPECT_EQ(FormatFloat(HUGE_VAL), "inf");
  EXPECT_EQ(FormatFloat(-HUGE_VAL), "-inf");
  EXPECT_EQ(FormatValue(MakeFloat(std::nan(""))), "nan");
}

TEST(FormatFloatTest, SwitchesToExponentLikePython) {
  EXPECT_EQ(FormatFloat(1e15), "1000000000000000.0");
  EXPECT_EQ(FormatFloat(1e16), "1e+16");
  EXPECT_EQ(FormatFloat(1.5e16), "1.5e+16");
  EXPECT_EQ(FormatFloat(9999999999999998.0), "9999999999999998.0");
  EXPECT_EQ(FormatFloat(0.0001), "0.0001");
  EXPECT_EQ(FormatFloat(0.00001), "1e-05");
  EXPECT_EQ(FormatFloat(-1.25e-7), "-1.25e-07");
  EXPECT_EQ(FormatFloat(1e100), "1e+100");
  EXPECT_EQ(FormatFloat(std::numeric_limits<double>::max()),
            "1.7976931348623157e+308");
  EXPECT_EQ(FormatFloat(std::numeric_limits<double>::denorm_min()), "5e-324");
  EXPECT_EQ(FormatFloat(1e22), "1e+22");
  EXPECT_EQ(FormatFloat(12345678901234567890.0), "1.2345678901234567e+19");
}

TEST(FormatStrTest, Quoting) {
  EXPECT_EQ(FormatStr(""), "''");
  EXPECT_EQ(FormatStr("str"), "'str'");
  EXPECT_EQ(FormatStr("it's"), "\"it's\"");
  EXPECT_EQ(FormatStr("say \"hi\""), "'say \"hi\"'");
  EXPECT_EQ(FormatStr("it's \"x\""), "'it\\'s \"x\"'");
  EXPECT_EQ(FormatStr("back\\slash"), "'back\\\\slash'");
}

TEST(FormatStrTest, ControlEscapes) {
  EXPECT_EQ(FormatStr("a\tb\nc\rd"), "'a\\tb\\nc\\rd'");
  EXPECT_EQ(FormatStr(std::string("\0\x01\x1f\x7f", 4)),
            "'\\x00\\x01\\x1f\\x7f'");
  EXPECT_EQ(FormatStr("\x0b\x0c"), "'\\x0b\\x0c'");
}

TEST(FormatStrTest, UnicodePrintableKept) {
  EXPECT_EQ(FormatStr("caf\xc3\xa9"), "'caf\xc3\xa9'");               // café
  EXPECT_EQ(FormatStr("\xe6\x97\xa5\xe6\x9c\xac"), "'\xe6\x97\xa5\xe6\x9c\xac'");
  EXPECT_EQ(FormatStr("\xf0\x9f\x98\x80"), "'\xf0\x9f\x98\x80'");       // 😀
}

TEST(FormatStrTest, UnicodeNonPrintableEscaped) {
  EXPECT_EQ(FormatStr("\xc2\x80"), "'\\x80'");         // U+0080 (C1 control)
  EXPECT_EQ(FormatStr("\xc2\xa0"), "'\\xa0'");         // no-break space
  EXPECT_EQ(FormatStr("\xc2\xad"), "'\\xad'");         // soft hyphen
  EXPECT_EQ(FormatStr("\xe2\x80\x8b"), "'\\u200b'");   // zero width space
  EXPECT_EQ(FormatStr("\xe2\x80\xa8"), "'\\u2028'");   // line separator
  EXPECT_EQ(FormatStr("\xef\xbb\xbf"), "'\\ufeff'");   // BOM
  EXPECT_EQ(FormatStr("\xee\x80\x80"), "'\\ue000'");   // private use
  EXPECT_EQ(FormatStr("\xef\xbf\xbf"), "'\\uffff'");   // non-character
  EXPECT_EQ(FormatStr("\xf3\xa0\x80\x81"), "'\\U000e0001'");  // language tag
  EXPECT_EQ(FormatStr("\xf4\x8f\xbf\xbd"), "'\\U0010fffd'");  // private use
  EXPECT_EQ(FormatStr("\xe3\x80\x80"), "'\\u3000'");   // ideographic space
}

TEST(FormatStrTest, InvalidUtf8ShownAsBytes) {
  EXPECT_EQ(FormatStr("a\xff" "b"), "'a\\xffb'");
  EXPECT_EQ(FormatStr("\xc3"), "'\\xc3'");              // truncated
  EXPECT_EQ(FormatStr("\xc0\x80"), "'\\xc0\\x80'");     // overlong
  EXPECT_EQ(FormatStr("\xed\xa0\x80"), "'\\xed\\xa0\\x80'");  // surrogate
}

TEST(FormatBytesTest, Escaping) {
  EXPECT_EQ(FormatBytes(""), "b''");
  EXPECT_EQ(FormatBytes("bytes"), "b'bytes'");
  EXPECT_EQ(FormatBytes(std::string("\0ab", 3)), "b'\\x00ab'");
  EXPECT_EQ(FormatBytes("\xff\x80\x7f"), "b'\\xff\\x80\\x7f'");
  EXPECT_EQ(FormatBytes("\t\n\r\\"), "b'\\t\\n\\r\\\\'");
  EXPECT_EQ(FormatBytes("it's"), "b\"it's\"");
  EXPECT_EQ(FormatBytes("'\""), "b'\\'\"'");
  EXPECT_EQ(FormatBytes("caf\xc3\xa9"), "b'caf\\xc3\\xa9'");
  EXPECT_EQ(FormatValue(MakeBytes("x")), "b'x'");
}

TEST(FormatValueTest, StrAndBytesStayDistinct) {
  EXPECT_EQ(FormatValue(MakeStr("a")), "'a'");
  EXPECT_EQ(FormatValue(MakeBytes("a")), "b'a'");
}

TEST(FormatValueTest, Lists) {
  EXPECT_EQ(FormatValue(MakeList({})), "[]");
  EXPECT_EQ(FormatValue(MakeList({MakeInt(1)})), "[1]");
  EXPECT_EQ(FormatValue(MakeList({MakeInt(1), MakeStr("a"), MakeNone()})),
            "[1, 'a', None]");
  EXPECT_EQ(FormatValue(MakeList({MakeList({}), MakeList({MakeInt(2)})})),
            "[[], [2]]");
}

TEST(FormatValueTest, Tuples) {
  EXPECT_EQ(FormatValue(MakeTuple({})), "()");
  EXPECT_EQ(FormatValue(MakeTuple({MakeInt(1)})), "(1,)");
  EXPECT_EQ(FormatValue(MakeTuple({MakeInt(1), MakeInt(2)})), "(1, 2)");
  EXPECT_EQ(FormatValue(MakeTuple({MakeTuple({MakeStr("x")})})), "(('x',),)");
}

TEST(FormatValueTest, Dicts) {
  EXPECT_EQ(FormatValue(MakeDict({})), "{}");
  EXPECT_EQ(FormatValue(MakeDict({{MakeStr("k"), MakeFloat(1.5)}})),
            "{'k': 1.5}");
  // Non-string keys, kept in the order given.
  EXPECT_EQ(FormatValue(MakeDict({{MakeInt(2), MakeNone()},
                                  {MakeTuple({MakeInt(1), MakeInt(2)}),
                                   MakeList({MakeBool(true)})}})),
            "{2: None, (1, 2): [True]}");
}

TEST(FormatValueTest, Sets) {
  EXPECT_EQ(FormatValue(MakeSet({})), "set()");
  EXPECT_EQ(FormatValue(MakeSet({MakeInt(1)})), "{1}");
  EXPECT_EQ(FormatValue(MakeSet({MakeInt(1), MakeInt(2)})), "{1, 2}");
}

TEST(FormatValueTest, EmptyContainersKeepTheirKind) {
  EXPECT_EQ(MakeTuple({}).kind_case(), v1::Value::kTuple);
  EXPECT_EQ(MakeDict({}).kind_case(), v1::Value::kDict);
  EXPECT_EQ(MakeSet({}).kind_case(), v1::Value::kSet);
  EXPECT_EQ(MakeList({}).kind_case(), v1::Value::kList);
}

TEST(RefTest, FromValueAndBackKeepsOnlyTheId) {
  v1::Value v;
  v.mutable_ref()->set_id("0123456789abcdef01234567");
  v.mutable_ref()->set_type("Model");
  v.mutable_ref()->set_repr("<Model>");
  std::optional<Ref> ref = Ref::From(v);
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->type, "Model");
  EXPECT_EQ(FormatValue(v), "<Model>");
  v1::Value back = ref->ToValue();
  EXPECT_EQ(back.ref().id(), "0123456789abcdef01234567");
  EXPECT_TRUE(back.ref().type().empty());
  EXPECT_FALSE(Ref::From(MakeInt(1)).has_value());
}

TEST(FormatValueTest, OpaqueUsesServerRepr) {
  v1::Value v;
  v.mutable_opaque()->set_type("datetime.date");
  v.mutable_opaque()->set_repr("datetime.date(2024, 1, 2)");
  EXPECT_EQ(FormatValue(v), "datetime.date(2024, 1, 2)");
  EXPECT_EQ(FormatValue(MakeList({v})), "[datetime.date(2024, 1, 2)]");
}

TEST(FormatValueTest, DeepNesting) {
  v1::Value v = MakeInt(0);
  for (int i = 0; i < 64; ++i) v = MakeList({v});
  const std::string s = FormatValue(v);
  EXPECT_EQ(s, std::string(64, '[') + "0" + std::string(64, ']'));
}

TEST(FormatValueTest, StringsInsideContainersUseRepr) {
  EXPECT_THAT(FormatValue(MakeList({MakeStr("a'b"), MakeBytes("\x01")})),
              HasSubstr("[\"a'b\", b'\\x01']"));
}

}  // namespace
}  // namespace pyexec
