// The prefill ranking passes of exact selection (select/mass_filter.hpp): group_mass against
// the masses add_softmax_mass builds head by head (bit for bit), and collect_reaching against
// a plain filter, with ties at the pivot, infinities, NaNs and every length around the vector
// blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/kernels.hpp"
#include "select/candidate_rescore.hpp"
#include "select/mass_filter.hpp"
#include "test_util.hpp"

namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(MassFilter, GroupMassEqualsHeadByHeadMass) {
  sat::Rng rng(41);
  const sa::KernelTable &k = sa::kernel_table(SA_ISA_AUTO);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t heads : {1, 2, 3, 4, 5, 8, 9, 16})
    for (int64_t n : {1, 15, 16, 17, 100, 333}) {
      std::vector<std::vector<float>> rows(static_cast<size_t>(heads), std::vector<float>(static_cast<size_t>(n)));
      for (int64_t g = 0; g < heads; ++g)
        for (int64_t j = 0; j < n; ++j) rows[size_t(g)][size_t(j)] = float(4 * rng.normal());
      if (heads > 2)  // a head that sees nothing: inv 0, left out
        for (float &x : rows[1]) x = -inf;
      for (int64_t j = 0; j < n; j += 3) rows[0][size_t(j)] = -inf;
      // The reference: add_softmax_mass head by head into a zeroed mass, then the scaling.
      std::vector<float> ref(static_cast<size_t>(n), 0.f);
      std::vector<const float *> ptr(static_cast<size_t>(heads));
      std::vector<float> inv(static_cast<size_t>(heads));
      std::vector<std::vector<float>> work = rows;
      for (int64_t g = 0; g < heads; ++g) sa::add_softmax_mass(k, work[size_t(g)].data(), n, ref.data());
      const float norm = 1.f / float(heads);
      for (float &x : ref) x *= norm;
      work = rows;
      for (int64_t g = 0; g < heads; ++g) {
        inv[size_t(g)] = sa::softmax_inv_sum(k, work[size_t(g)].data(), n);
        ptr[size_t(g)] = work[size_t(g)].data();
      }
      std::vector<float> mass(static_cast<size_t>(n), -1.f);
      sa::group_mass(ptr.data(), inv.data(), heads, n, norm, mass.data());
      for (int64_t j = 0; j < n; ++j)
        ASSERT_TRUE(same_bits(mass[size_t(j)], ref[size_t(j)]))
            << "heads " << heads << " n " << n << " j " << j << ": " << mass[size_t(j)] << " vs " << ref[size_t(j)];
    }
}

TEST(MassFilter, CollectReachingKeepsExactlyThoseAtOrAbovePivot) {
  sat::Rng rng(42);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t n : {0, 1, 15, 16, 17, 31, 32, 33, 200, 1000})
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> mass(static_cast<size_t>(n));
      for (float &x : mass) {
        x = kind == 0 ? float(rng.uniform()) : float(rng.below(4)) * 0.25f;  // kind 1, 2: ties at the pivot
        if (kind == 2 && rng.below(5) == 0) x = rng.below(2) ? -inf : inf;
      }
      for (float pivot : {0.f, 0.25f, 0.5f, 0.75f, 2.f, -inf}) {
        std::vector<int32_t> out(static_cast<size_t>(n + sa::kReachingSlack), -7);
        const int64_t got = sa::collect_reaching(mass.data(), n, pivot, out.data());
        std::vector<int32_t> want;
        for (int64_t j = 0; j < n; ++j)
          if (mass[size_t(j)] >= pivot) want.push_back(int32_t(j));
        ASSERT_EQ(got, int64_t(want.size())) << "n " << n << " pivot " << pivot;
        for (size_t c = 0; c < want.size(); ++c) EXPECT_EQ(out[c], want[c]);
      }
    }
}

TEST(MassFilter, CollectReachingRefusesNaN) {
  for (int64_t n : {1, 16, 17, 40})
    for (int64_t at : {int64_t(0), n / 2, n - 1}) {
      std::vector<float> mass(static_cast<size_t>(n), 1.f);
      mass[size_t(at)] = std::nanf("");
      std::vector<int32_t> out(static_cast<size_t>(n + sa::kReachingSlack));
      EXPECT_EQ(sa::collect_reaching(mass.data(), n, 0.5f, out.data()), -1) << "n " << n << " NaN at " << at;
    }
}

// The fused pass (AVX-512 where this CPU has it, and the portable pair) against the two
// functions in turn: the same masses, bit for bit, and the same collected slots.
TEST(MassFilter, GroupMassReachingEqualsTheTwoPasses) {
  sat::Rng rng(44);
  const bool avx512 = sa::kernel_table(SA_ISA_AUTO).isa == SA_ISA_AVX512;
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t heads : {1, 3, 4, 8, 17})
    for (int64_t n : {0, 5, 16, 47, 300}) {
      std::vector<std::vector<float>> rows(static_cast<size_t>(heads), std::vector<float>(static_cast<size_t>(n)));
      std::vector<const float *> ptr(static_cast<size_t>(heads));
      std::vector<float> inv(static_cast<size_t>(heads));
      for (int64_t g = 0; g < heads; ++g) {
        for (float &x : rows[size_t(g)]) x = float(rng.uniform());
        inv[size_t(g)] = g == 1 ? 0.f : float(rng.uniform(0.5, 2.0));  // head 1 sees nothing
        ptr[size_t(g)] = rows[size_t(g)].data();
      }
      if (n > 3) rows[0][3] = inf;
      const float norm = 1.f / float(heads);
      std::vector<float> ref(static_cast<size_t>(n)), mass(static_cast<size_t>(n));
      sa::group_mass(ptr.data(), inv.data(), heads, n, norm, ref.data());
      for (bool wide : {false, avx512}) {
        std::vector<int32_t> want(static_cast<size_t>(n + sa::kReachingSlack)), got(want.size());
        const int64_t n_want = sa::collect_reaching(ref.data(), n, 0.5f, want.data());
        const int64_t n_got =
            sa::group_mass_reaching(ptr.data(), inv.data(), heads, n, norm, mass.data(), 0.5f, got.data(), wide);
        for (int64_t j = 0; j < n; ++j) ASSERT_TRUE(same_bits(mass[size_t(j)], ref[size_t(j)])) << "j " << j;
        ASSERT_EQ(n_got, n_want);
        for (int64_t c = 0; c < n_got; ++c) EXPECT_EQ(got[size_t(c)], want[size_t(c)]);
      }
      if (n > 20) {  // a NaN is refused, and every mass still written
        rows[2 % heads][size_t(n - 2)] = std::nanf("");
        for (bool wide : {false, avx512}) {
          std::vector<int32_t> got(static_cast<size_t>(n + sa::kReachingSlack));
          std::fill(mass.begin(), mass.end(), -1.f);
          EXPECT_EQ(sa::group_mass_reaching(ptr.data(), inv.data(), heads, n, norm, mass.data(), 0.5f, got.data(), wide), -1);
          EXPECT_TRUE(same_bits(mass[0], ref[0]));
          EXPECT_TRUE(same_bits(mass[size_t(n - 1)], ref[size_t(n - 1)]));
        }
      }
    }
}

// nth_best and kth_best against sorting: distinct slots, scores with and without ties.
TEST(MassFilter, NthBestMatchesSorting) {
  sat::Rng rng(43);
  for (size_t n : {size_t(1), size_t(2), size_t(16), size_t(17), size_t(100), size_t(300), size_t(1000)})
    for (int ties = 0; ties < 3; ++ties)
      for (int rep = 0; rep < 4; ++rep) {
        std::vector<sa::Candidate> c(n);
        for (size_t j = 0; j < n; ++j) {  // ties == 2: every score equal (slots decide)
          const float x = ties == 0 ? float(rng.normal()) : ties == 1 ? float(rng.below(3)) : 1.f;
          c[j] = {x, int32_t(rng.below(1 << 20) * 64 + int64_t(j))};  // distinct slots, any order
        }
        std::vector<sa::Candidate> sorted = c;
        std::sort(sorted.begin(), sorted.end(), sa::ranks_before);
        const size_t k = size_t(rng.below(int64_t(n)));
        std::vector<uint64_t> keys;
        const std::vector<sa::Candidate> before = c;
        const sa::Candidate kth = sa::kth_best(c, k, keys);
        ASSERT_EQ(kth.slot, sorted[k].slot) << "kth_best: n " << n << " k " << k;
        ASSERT_EQ(kth.score, sorted[k].score);
        for (size_t j = 0; j < n; ++j) ASSERT_EQ(c[j].slot, before[j].slot);  // left as it was
        sa::nth_best(c, k);
        ASSERT_EQ(c[k].slot, sorted[k].slot) << "n " << n << " k " << k;
        for (size_t j = 0; j < k; ++j) ASSERT_FALSE(sa::ranks_before(c[k], c[j]));
        for (size_t j = k + 1; j < n; ++j) ASSERT_FALSE(sa::ranks_before(c[j], c[k]));
      }
}

}  // namespace
