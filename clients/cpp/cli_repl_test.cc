#include "clients/cpp/cli_repl.h"

#include <string>
#include <vector>

#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

TEST(ReplStatementCodeTest, RunsTheHelperInItsOwnNamespace) {
  const std::string code = ReplStatementCode("x = 'a'\n");
  EXPECT_THAT(code, StartsWith("exec(compile('"));
  EXPECT_THAT(code, HasSubstr("Runs one statement of `pyexec repl`"));
  EXPECT_THAT(code, HasSubstr("', '<pyexec-repl>', 'exec'), {'__builtins__': __builtins__, "));
  EXPECT_THAT(code, HasSubstr("'namespace': globals(), 'source': \"x = 'a'\\n\"})"));
  EXPECT_THAT(code, EndsWith("})"));
}

TEST(ReplCompletionCodeTest, TextIsAStrLiteral) {
  EXPECT_THAT(ReplCompletionCode("math.p"), EndsWith(", 'math.p')"));
  EXPECT_THAT(ReplCompletionCode("a'b"), EndsWith(", \"a'b\")"));
}

TEST(CompletionsFromValueTest, ListOfStrOnly) {
  EXPECT_THAT(CompletionsFromValue(MakeList({MakeStr("math.pi"), MakeStr("math.pow(")})),
              ElementsAre("math.pi", "math.pow("));
  EXPECT_THAT(CompletionsFromValue(MakeList({})), IsEmpty());
  EXPECT_THAT(CompletionsFromValue(MakeList({MakeStr("a"), MakeInt(1)})), IsEmpty());
  EXPECT_THAT(CompletionsFromValue(MakeStr("a")), IsEmpty());
  EXPECT_THAT(CompletionsFromValue(MakeNone()), IsEmpty());
}

}  // namespace
}  // namespace pyexec
