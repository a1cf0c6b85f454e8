#include "clients/cpp/value_json.h"

#include <cmath>

#include "clients/cpp/value.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

std::string J(const v1::Value& v) { return DumpJson(ValueToJson(v)); }

TEST(ValueJsonTest, ScalarsAreTaggedAndExact) {
  EXPECT_EQ(J(MakeNone()), R"({"none":null})");
  EXPECT_EQ(J(MakeBool(true)), R"({"bool":true})");
  EXPECT_EQ(J(MakeInt(-42)), R"({"int":"-42"})");
  EXPECT_EQ(J(*MakeBigInt("123456789012345678901234567890")),
            R"({"int":"123456789012345678901234567890"})");
  EXPECT_EQ(J(MakeFloat(1.5)), R"({"float":1.5})");
  EXPECT_EQ(J(MakeFloat(3.0)), R"({"float":3.0})");
  EXPECT_EQ(J(MakeFloat(std::nan(""))), R"({"float":"nan"})");
  EXPECT_EQ(J(MakeFloat(-INFINITY)), R"({"float":"-inf"})");
  EXPECT_EQ(J(MakeStr("h\xc3\xa9\n")), "{\"str\":\"h\xc3\xa9\\n\"}");
  EXPECT_EQ(J(MakeBytes(std::string("\x00\x01\xff", 3))), R"({"bytes":"AAH/"})");
}

TEST(ValueJsonTest, ContainersKeepTheirKind) {
  EXPECT_EQ(J(MakeList({MakeInt(1)})), R"({"list":[{"int":"1"}]})");
  EXPECT_EQ(J(MakeTuple({})), R"({"tuple":[]})");
  EXPECT_EQ(J(MakeSet({MakeStr("a")})), R"({"set":[{"str":"a"}]})");
  EXPECT_EQ(J(MakeDict({{MakeTuple({MakeInt(1)}), MakeNone()}})),
            R"({"dict":[[{"tuple":[{"int":"1"}]},{"none":null}]]})");
  v1::Value opaque;
  opaque.mutable_opaque()->set_type("datetime.date");
  opaque.mutable_opaque()->set_repr("datetime.date(2024, 1, 2)");
  EXPECT_EQ(J(opaque),
            R"j({"opaque":{"repr":"datetime.date(2024, 1, 2)","type":"datetime.date"}})j");
  EXPECT_EQ(J(v1::Value()), "null");
}

TEST(ValueJsonTest, InvalidUtf8IsReplacedNotThrown) {
  EXPECT_EQ(DumpJson(nlohmann::json("a\xff")), "\"a\xef\xbf\xbd\"");
}

}  // namespace
}  // namespace pyexec
