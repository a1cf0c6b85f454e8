#include "bench/sessions.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

TEST(SessionsTest, ParsesSmapsRollup) {
  SmapsRollup m = ParseSmapsRollup(
      "55d0c0a0e000-7ffd4b3f2000 ---p 00000000 00:00 0    [rollup]\n"
      "Rss:               10240 kB\n"
      "Pss:                3000 kB\n"
      "Pss_Anon:           1000 kB\n"
      "Shared_Clean:       7000 kB\n"
      "Private_Clean:       200 kB\n"
      "Private_Dirty:      1800 kB\n");
  EXPECT_EQ(m.rss_kb, 10240);
  EXPECT_EQ(m.pss_kb, 3000);
  EXPECT_EQ(m.private_kb, 2000);
}

TEST(SessionsTest, EmptyTextIsZero) {
  SmapsRollup m = ParseSmapsRollup("");
  EXPECT_EQ(m.rss_kb + m.pss_kb + m.private_kb, 0);
}

}  // namespace
}  // namespace bench
}  // namespace pyexec
