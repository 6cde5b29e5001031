// parallel_for_slots (core/threading.hpp): every task once, slots below the count asked for,
// and a team of every slot even when the loop has fewer tasks, so that the loops of one call
// keep one team size (libgomp ends the threads a smaller team leaves out and starts new ones
// for the next larger team).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <vector>

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

}  // namespace
