#include "bench/thread_costs.h"

#include <unistd.h>

#include <atomic>
#include <thread>

#include "common/thread_name.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

TEST(ThreadCostsTest, CountsANamedThreadsCpuAndSleeps) {
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    NameThisThread("cost-test-busy");
    while (!stop) {
      for (volatile int i = 0; i < 100000; i = i + 1) {
      }
      usleep(100);  // a voluntary switch each round
    }
  });
  usleep(20000);
  ThreadCosts before = ReadThreadCosts(getpid());
  usleep(100000);
  ThreadCosts after = ReadThreadCosts(getpid());
  stop = true;
  busy.join();
  std::string process_key;
  for (const auto& [name, cost] : after) {
    if (name.size() > 15 && name.substr(name.find('/')) == "/cost-test-busy") process_key = name;
  }
  ASSERT_FALSE(process_key.empty()) << "no thread named cost-test-busy";
  EXPECT_GT(after[process_key].cpu, before[process_key].cpu);
  EXPECT_GT(after[process_key].voluntary, before[process_key].voluntary);
  std::string table = FormatThreadCosts(before, after, 10);
  EXPECT_NE(table.find("cost-test-busy"), std::string::npos) << table;
}

}  // namespace
}  // namespace bench
}  // namespace pyexec
