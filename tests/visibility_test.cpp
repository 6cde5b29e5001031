// The visibility rule of src/core/visibility.hpp: its position ranges (used where slots are
// found by position: collect_forced, LSH's fallback, page usability, the CUDA select) against
// the per-slot predicates (used where slots are tested one by one), by brute force over small
// positions, sinks and windows, empty slots and negative query positions included.
#include <gtest/gtest.h>

#include <cstdint>

#include "core/visibility.hpp"

namespace {

bool in_range(int64_t k, sa::PositionRange r) { return r.lo <= k && k <= r.hi; }

TEST(Visibility, RangesMatchThePerSlotRule) {
  for (int64_t p = -3; p <= 12; ++p)
    for (int64_t sinks = 0; sinks <= 4; ++sinks)
      for (int64_t window = 0; window <= 6; ++window) {
        const sa::PositionRange s = sa::sink_positions(p, sinks), w = sa::window_positions(p, window, sinks),
                                c = sa::scored_positions(p, window, sinks);
        for (int64_t k = sa::kEmptySlotPosition; k <= 14; ++k) {
          SCOPED_TRACE(testing::Message() << "p " << p << " sinks " << sinks << " window " << window << " key " << k);
          const bool visible = sa::sees(p, k);
          const bool forced = visible && sa::in_sinks_or_window(k, p, window, sinks);
          // Independent of the header: the rule as the C header states it.
          EXPECT_EQ(visible, k >= 0 && k <= p);
          EXPECT_EQ(forced, k >= 0 && k <= p && (k < sinks || k > p - window));
          // The ranges split the visible slots into sinks, window and scored, without overlap.
          EXPECT_EQ(forced, in_range(k, s) || in_range(k, w));
          EXPECT_FALSE(in_range(k, s) && in_range(k, w));
          EXPECT_EQ(visible && !forced, in_range(k, c) && k >= 0);
        }
      }
}

TEST(Visibility, EmptySlotsAndSegments) {
  EXPECT_FALSE(sa::sees(sa::kNoPositionLimit, sa::kEmptySlotPosition));
  EXPECT_TRUE(sa::sees(sa::kNoPositionLimit, 0));
  EXPECT_FALSE(sa::in_sinks_or_window(sa::kEmptySlotPosition, 5, 3, 4));  // -1 < sinks, yet never kept
  const int32_t segments[] = {0, 1, 1, 0};
  EXPECT_TRUE(sa::sees(5, 2, segments, 2, 1));
  EXPECT_FALSE(sa::sees(5, 3, segments, 3, 1));   // another segment
  EXPECT_FALSE(sa::sees(1, 2, segments, 2, 1));   // its segment, but in the future
  EXPECT_TRUE(sa::sees(5, 3, nullptr, 3, 1));     // no segments
}

}  // namespace
