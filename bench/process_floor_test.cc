#include "bench/process_floor.h"

#include <unistd.h>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

void Spin(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  volatile uint64_t x = 0;
  while (absl::Now() < end) x = x + 1;
}

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

TEST(ProcessFloorTest, CpuClocksAdvanceWithWork) {
  absl::StatusOr<absl::Duration> self0 = ProcessTreeCpuTime(getpid());
  absl::StatusOr<absl::Duration> machine0 = MachineBusyTime();
  ASSERT_TRUE(self0.ok()) << self0.status();
  ASSERT_TRUE(machine0.ok()) << machine0.status();
  Spin(absl::Milliseconds(200));
  absl::StatusOr<absl::Duration> self1 = ProcessTreeCpuTime(getpid());
  absl::StatusOr<absl::Duration> machine1 = MachineBusyTime();
  ASSERT_TRUE(self1.ok() && machine1.ok());
  // Clock ticks are 10 ms; 200 ms of spinning shows as at least 100 ms.
  EXPECT_GE(*self1 - *self0, absl::Milliseconds(100));
  EXPECT_GE(*machine1 - *machine0, absl::Milliseconds(100));
  EXPECT_FALSE(ProcessTreeCpuTime(-1).ok());
}

}  // namespace
}  // namespace bench
}  // namespace pyexec
