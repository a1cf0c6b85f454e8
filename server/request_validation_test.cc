#include "server/request_validation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

v1::Value Nested(int depth) {
  v1::Value root;
  v1::Value* v = &root;
  for (int i = 0; i < depth; ++i) {
    v->set_list(true);
    v = v->add_items();
  }
  v->set_int_(1);
  return root;
}

TEST(RequestValidationTest, DepthIsCheckedAgainstTheWorkersLimit) {
  EXPECT_TRUE(ValidateValue(Nested(64), 64).ok());
  absl::Status deep = ValidateValue(Nested(65), 64);
  EXPECT_EQ(deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(deep.message()), HasSubstr("limit of 64"));
  // What once passed pyexecd's parse and killed the worker.
  v1::CallRequest call;
  call.set_module("builtins");
  call.set_function("len");
  *call.add_args() = Nested(170);
  absl::Status s = ValidateRequest(call, 64);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("argument 0"));
  v1::EvalRequest eval;
  eval.set_code("x");
  (*eval.mutable_locals())["x"] = Nested(100);
  EXPECT_THAT(std::string(ValidateRequest(eval, 64).message()), HasSubstr("local 'x'"));
}

TEST(RequestValidationTest, DictsAndSetsCountLikeLists) {
  v1::Value dict;
  dict.set_dict(true);
  *dict.add_keys() = Nested(0);
  *dict.add_items() = Nested(3);
  EXPECT_TRUE(ValidateValue(dict, 4).ok());
  EXPECT_FALSE(ValidateValue(dict, 3).ok());
  dict.add_items()->set_int_(2);
  EXPECT_THAT(std::string(ValidateValue(dict, 10).message()), HasSubstr("1 keys and 2 items"));
  v1::Value scalar;
  scalar.set_int_(1);
  scalar.add_items()->set_int_(2);
  EXPECT_FALSE(ValidateValue(scalar, 10).ok());
}

TEST(RequestValidationTest, RequestShapes) {
  EXPECT_THAT(std::string(ValidateRequest(v1::ExecRequest(), 64).message()),
              HasSubstr("code is empty"));
  v1::CallRequest call;
  call.set_function("f");
  EXPECT_THAT(std::string(ValidateRequest(call, 64).message()), HasSubstr("module is empty"));
  call.set_target_ref("r1");
  EXPECT_THAT(std::string(ValidateRequest(call, 64).message()),
              HasSubstr("needs a bound session"));
  call.set_session("s");
  EXPECT_TRUE(ValidateRequest(call, 64).ok());
  call.set_get_attribute(true);
  call.add_args()->set_int_(1);
  EXPECT_FALSE(ValidateRequest(call, 64).ok());
  EXPECT_FALSE(ValidateRequest(v1::ReleaseRequest()).ok());
}

}  // namespace
}  // namespace pyexec
