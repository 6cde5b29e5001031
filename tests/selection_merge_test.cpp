// write_selection (select/selection_merge.hpp) keeps the top_k best candidates by ranks_before:
// against sorting every candidate, for scores with many ties, +0 and -0, infinities and NaNs,
// and every size around the radix select's threshold.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "select/selection_merge.hpp"
#include "test_util.hpp"

namespace {

enum class Scores { normal, ties, signed_zeros, infinities, nan, equal };

float make_score(sat::Rng &rng, Scores s) {
  const float inf = std::numeric_limits<float>::infinity();
  switch (s) {
    case Scores::ties: return float(rng.below(5)) * 0.25f;
    case Scores::signed_zeros: return rng.below(2) ? 0.f : -0.f;
    case Scores::infinities: return rng.below(4) == 0 ? (rng.below(2) ? inf : -inf) : float(rng.normal());
    case Scores::nan: return rng.below(7) == 0 ? std::nanf("") : float(rng.normal());
    case Scores::equal: return 0.5f;
    case Scores::normal: break;
  }
  return float(rng.normal());
}

TEST(WriteSelection, KeepsTheBestAsSorting) {
  sat::Rng rng(11);
  sa::WriteScratch scratch;
  for (Scores kind : {Scores::normal, Scores::ties, Scores::signed_zeros, Scores::infinities, Scores::nan, Scores::equal})
    for (int n : {5, 255, 256, 257, 1000, 4160})
      for (int k : {1, 2, n / 3 + 1, n / 2, n - 1, n, n + 3}) {
        if (k < 1) continue;
        std::vector<sa::Candidate> cands(static_cast<size_t>(n));
        std::vector<int32_t> slots(static_cast<size_t>(2 * n));
        for (int i = 0; i < 2 * n; ++i) slots[size_t(i)] = i;
        for (int i = 2 * n - 1; i > 0; --i) std::swap(slots[size_t(i)], slots[size_t(rng.below(i + 1))]);
        for (int i = 0; i < n; ++i) cands[size_t(i)] = {make_score(rng, kind), slots[size_t(i)]};
        // Reference: sorting by ranks_before (NaNs, which it does not order, left out).
        std::vector<sa::Candidate> ordered;
        for (const sa::Candidate &c : cands)
          if (!std::isnan(c.score)) ordered.push_back(c);
        std::sort(ordered.begin(), ordered.end(), sa::ranks_before);
        const std::vector<int64_t> pos(size_t(2 * n), 1000);  // no sink or window
        const sa::KeepRule rule{2000, 0, 0, k, 0.f};
        std::vector<int32_t> forced, out(static_cast<size_t>(k));
        std::vector<sa::Candidate> work = cands;
        sa::write_selection(work, forced, 0.f, rule, pos.data(), out.data(), k, 1, scratch);
        const size_t kept = size_t(std::min(k, n));
        std::vector<int32_t> got(out.begin(), out.begin() + long(kept));
        ASSERT_TRUE(std::is_sorted(got.begin(), got.end())) << "kind " << int(kind) << " n=" << n << " k=" << k;
        if (kind == Scores::nan) {  // no order to check: distinct candidates, as many as asked
          EXPECT_EQ(std::unique(got.begin(), got.end()), got.end());
          for (int32_t slot : got)
            EXPECT_TRUE(std::any_of(cands.begin(), cands.end(), [&](const sa::Candidate &c) { return c.slot == slot; }));
          continue;
        }
        std::vector<int32_t> want;
        for (size_t i = 0; i < kept; ++i) want.push_back(ordered[i].slot);
        std::sort(want.begin(), want.end());
        EXPECT_EQ(got, want) << "kind " << int(kind) << " n=" << n << " k=" << k;
        for (int i = int(kept); i < k; ++i) EXPECT_EQ(out[size_t(i)], -1);
      }
}

}  // namespace

// best_floor: at least keep scores (NaN aside) reach the floor, so the best keep by sorting are
// all at or above it; and it is tight enough to matter (masses in (0, 1]: fewer than 2 keep
// reach it). Ties, signed zeros, infinities, NaNs, negative scores, keep around n.
namespace {
TEST(BestFloor, NoScoreBelowItIsAmongTheBest) {
  sat::Rng rng(12);
  for (Scores kind : {Scores::normal, Scores::ties, Scores::signed_zeros, Scores::infinities, Scores::nan, Scores::equal})
    for (int n : {1, 2, 17, 300, 2048, 5000})
      for (int keep : {-1, 0, 1, 2, n / 16 + 1, n / 2, n - 1, n, n + 1}) {
        std::vector<float> x(static_cast<size_t>(n));
        for (float &v : x) v = make_score(rng, kind);
        const float floor = sa::best_floor(x.data(), n, keep);
        std::vector<float> sorted;
        for (float v : x)
          if (!std::isnan(v)) sorted.push_back(v);
        std::sort(sorted.begin(), sorted.end(), std::greater<float>());
        SCOPED_TRACE(testing::Message() << "kind " << int(kind) << ", n " << n << ", keep " << keep);
        if (keep <= 0 || keep >= n || int(sorted.size()) < keep) {
          EXPECT_EQ(floor, -std::numeric_limits<float>::infinity());
          continue;
        }
        EXPECT_FALSE(sorted[size_t(keep - 1)] < floor) << "the keep-th best lies below the floor " << floor;
      }
  for (int n : {2048, 4096}) {  // attention masses: the floor leaves few more than keep
    std::vector<float> x(static_cast<size_t>(n));
    double sum = 0;
    for (float &v : x) sum += v = float(std::exp2(rng.normal() * 3));
    for (float &v : x) v = float(v / sum);
    const int keep = 128;
    const float floor = sa::best_floor(x.data(), n, keep);
    const int64_t reach = std::count_if(x.begin(), x.end(), [&](float v) { return !(v < floor); });
    EXPECT_GE(reach, keep);
    EXPECT_LT(reach, 2 * keep) << "n " << n;
  }
}
}  // namespace
