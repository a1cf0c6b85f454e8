#include "bench/stage_trace.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

TEST(ParseTraceTest, ReadsEveryStageInOrder) {
  auto times = ParseTrace("entered=0 pool_sent=9100 worker_received=- finish=61000");
  ASSERT_TRUE(times.ok()) << times.status();
  ASSERT_EQ(times->size(), 4u);
  EXPECT_EQ((*times)[0], std::make_pair(std::string("entered"), int64_t{0}));
  EXPECT_EQ((*times)[1], std::make_pair(std::string("pool_sent"), int64_t{9100}));
  EXPECT_EQ((*times)[2].second, -1);  // not reached
  EXPECT_EQ((*times)[3].second, 61000);
}

TEST(ParseTraceTest, RefusesWhatIsNotATrace) {
  EXPECT_FALSE(ParseTrace("").ok());
  EXPECT_FALSE(ParseTrace("pool_sent=1").ok());  // must start at the handler
  EXPECT_FALSE(ParseTrace("entered=0 pool_sent=x").ok());
  EXPECT_FALSE(ParseTrace("entered=0 =5").ok());
}

TEST(FormatStageTableTest, ShowsEachStageAgainstEcho) {
  StageBreakdown b;
  b.stages = {{"entered -> pool_sent", absl::Microseconds(10)}};
  b.client_total = absl::Microseconds(100);
  b.outside_handler = absl::Microseconds(40);
  b.calls = 3;
  std::string table = FormatStageTable(b, absl::Microseconds(50));
  EXPECT_NE(table.find("entered -> pool_sent"), std::string::npos) << table;
  EXPECT_NE(table.find("0.20x"), std::string::npos) << table;  // 10 of 50 us
  EXPECT_NE(table.find("2.00x"), std::string::npos) << table;  // total 100 of 50
}

}  // namespace
}  // namespace bench
}  // namespace pyexec
