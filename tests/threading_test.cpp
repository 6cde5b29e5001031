// parallel_for_slots (core/threading.hpp): every task once, slots below the count asked for,
// and a team of every slot even when the loop has fewer tasks, so that the loops of one call
// keep one team size (libgomp ends the threads a smaller team leaves out and starts new ones
// for the next larger team). parallel_pipeline_slots with core/ready_flags.hpp: a chain of
// tasks each waiting for the one before runs to its end on 4 threads, and a task that throws
// ends the waits of the later ones (the loop then rethrows).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/ready_flags.hpp"
#include "core/threading.hpp"

namespace {

TEST(ParallelForSlots, FewerTasksThanSlotsKeepTheTeam) {
  for (int64_t n : {2, 3, 4, 9}) {
    std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
    std::atomic<int> team{0}, bad_slot{0};
    sa::parallel_for_slots(4, n, [&](int64_t i, int slot) {
      ++runs[size_t(i)];
      bad_slot += slot < 0 || slot >= 4;
      team = omp_get_num_threads();
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(runs[size_t(i)], 1) << "n=" << n << " task " << i;
    EXPECT_EQ(bad_slot, 0) << "n=" << n;
    EXPECT_EQ(team, 4) << "n=" << n;
  }
}

TEST(ParallelForSlots, OneTaskOrOneSlotOrAHostRegionRunsSerially) {
  std::atomic<int> parallel{0};
  sa::parallel_for_slots(4, 1, [&](int64_t, int) { parallel += omp_in_parallel(); });
  sa::parallel_for_slots(1, 6, [&](int64_t, int) { parallel += omp_in_parallel(); });
  EXPECT_EQ(parallel, 0);
#pragma omp parallel num_threads(2)
  sa::parallel_for_slots(4, 6, [&](int64_t, int slot) {
    EXPECT_EQ(slot, 0);  // the host's region: no team of ours inside it
    EXPECT_EQ(omp_get_num_threads(), 2);
  });
}

// Each task waits for the one before it (tasks are claimed in order, so that one is running):
// the chain completes, each task seeing its predecessor's write, on 4 threads and serially.
TEST(ParallelPipeline, TasksWaitForEarlierOnes) {
  for (int slots : {4, 1}) {
    const int64_t n = 300;
    std::vector<int64_t> value(static_cast<size_t>(n), -1);
    sa::ReadyFlags ready;
    ready.reset(n);
    std::atomic<int> bad_slot{0};
    sa::parallel_pipeline_slots(slots, n, [&](int64_t i, int slot) {
      bad_slot += slot < 0 || slot >= slots;
      if (i > 0 && !ready.wait(i - 1)) return;
      value[size_t(i)] = i == 0 ? 0 : value[size_t(i - 1)] + 1;
      ready.set(i);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(value[size_t(i)], i) << "slots " << slots;
    EXPECT_EQ(bad_slot, 0);
  }
}

// A task that fails aborts the flags: the later tasks, waiting for it, return, and the loop
// rethrows its exception (without abort() they would wait forever).
TEST(ParallelPipeline, AFailedTaskEndsTheWaits) {
  for (int slots : {4, 1}) {
    const int64_t n = 100;
    sa::ReadyFlags ready;
    ready.reset(n);
    std::atomic<int> ran{0};
    EXPECT_THROW(sa::parallel_pipeline_slots(slots, n,
                                             [&](int64_t i, int) {
                                               if (i > 0 && !ready.wait(i - 1)) return;
                                               if (i == 40) {
                                                 ready.abort();
                                                 throw std::runtime_error("task 40");
                                               }
                                               ++ran;
                                               ready.set(i);
                                             }),
                 std::runtime_error);
    EXPECT_EQ(ran, 40) << "slots " << slots;
  }
}

}  // namespace
