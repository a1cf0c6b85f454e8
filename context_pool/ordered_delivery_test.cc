#include "context_pool/ordered_delivery.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(OrderedDeliveryTest, DeliversInSequenceWhateverTheArrivalOrder) {
  OrderedDelivery order;
  std::vector<int> seen;
  for (int seq : {2, 0, 3, 1, 5, 4}) {
    order.Put(seq, [&seen, seq] { seen.push_back(seq); });
  }
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(OrderedDeliveryTest, HoldsItemsUntilTheGapIsFilled) {
  OrderedDelivery order;
  std::vector<int> seen;
  order.Put(1, [&seen] { seen.push_back(1); });
  EXPECT_TRUE(seen.empty());
  order.Put(0, [&seen] { seen.push_back(0); });
  EXPECT_EQ(seen, (std::vector<int>{0, 1}));
}

// A receiver may put the next item itself (a consumer that calls back into
// the pool, which delivers on its thread): no deadlock, order kept.
TEST(OrderedDeliveryTest, AReceiverMayPutMoreWithoutDeadlock) {
  OrderedDelivery order;
  std::vector<int> seen;
  order.Put(0, [&] {
    seen.push_back(0);
    order.Put(1, [&seen] { seen.push_back(1); });
    seen.push_back(10);
  });
  EXPECT_EQ(seen, (std::vector<int>{0, 10, 1}));
}

TEST(OrderedDeliveryTest, ManyThreadsKeepTheOrder) {
  OrderedDelivery order;
  std::vector<int> seen;  // written only by the draining thread
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&order, &seen, t] {
      for (int i = t; i < 4000; i += 4) order.Put(i, [&seen, i] { seen.push_back(i); });
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(seen.size(), 4000u);
  for (int i = 0; i < 4000; ++i) ASSERT_EQ(seen[i], i);
}

}  // namespace
}  // namespace pyexec
