#include "bench/process_floor.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

std::string Helper() { return "bench/process_floor_helper"; }  // runfiles-relative

TEST(ProcessFloorTest, MeasuresAPositiveCostPerProcess) {
  ProcessFloorOptions o;
  o.helper_binary = Helper();
  o.resident_bytes = 4 << 20;
  o.dirtied_bytes = 256 << 10;
  o.iterations = 20;
  absl::StatusOr<absl::Duration> cost = MeasureProcessFloor(o);
  ASSERT_TRUE(cost.ok()) << cost.status();
  EXPECT_GT(*cost, absl::ZeroDuration());
  EXPECT_LT(*cost, absl::Seconds(1));
}

TEST(ProcessFloorTest, MeasuresAProcessHop) {
  absl::StatusOr<absl::Duration> hop = MeasureProcessHop(Helper(), 2000);
  ASSERT_TRUE(hop.ok()) << hop.status();
  EXPECT_GT(*hop, absl::ZeroDuration());
  EXPECT_LT(*hop, absl::Milliseconds(100));
  EXPECT_FALSE(MeasureProcessHop(Helper(), 0).ok());
}

TEST(ProcessFloorTest, RefusesEmptySettings) {
  ProcessFloorOptions o;
  o.helper_binary = Helper();
  o.iterations = 0;
  EXPECT_FALSE(MeasureProcessFloor(o).ok());
  o.iterations = 1;
  o.helper_binary = "/nonexistent/process_floor_helper";
  EXPECT_FALSE(MeasureProcessFloor(o).ok());
}

}  // namespace
}  // namespace bench
}  // namespace pyexec
