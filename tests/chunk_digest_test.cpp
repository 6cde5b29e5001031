// ChunkDigest (select/chunk_digest.hpp), a decode step's page threshold from per-chunk digests,
// against kth_largest_key over all the chunks' values at once and counting: random, tied (ties
// spanning chunks), -inf, NaN, signed zeros and values of mixed sign; chunks of 0 to 600
// values, some empty or holding only NaNs; every k that matters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "select/chunk_digest.hpp"
#include "select/kth_largest.hpp"
#include "select/order_key.hpp"
#include "test_util.hpp"

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

enum class Fill { normal, ties, neg_inf, nan, zeros, positive, far_apart };

float value(sat::Rng &rng, Fill f) {
  const float v = float(rng.normal());
  switch (f) {
    case Fill::ties: return float(rng.below(3));
    case Fill::neg_inf: return rng.below(3) == 0 ? -kInf : v;
    case Fill::nan: return rng.below(3) == 0 ? std::nanf("") : v;
    case Fill::zeros: return rng.below(3) == 0 ? (rng.below(2) ? 0.f : -0.f) : v;
    case Fill::positive: return std::exp2(4.f * v);  // a group's summed probabilities
    case Fill::far_apart: return rng.below(2) ? 1e30f * v : 1e-30f * v;  // digits far apart
    case Fill::normal: break;
  }
  return v;
}

TEST(ChunkDigest, KthLargestAndCountsAsOverAllValues) {
  sat::Rng rng(21);
  std::vector<uint32_t> scratch;
  for (Fill f : {Fill::normal, Fill::ties, Fill::neg_inf, Fill::nan, Fill::zeros, Fill::positive, Fill::far_apart})
    for (int round = 0; round < 12; ++round) {
      const int64_t chunks = 1 + int64_t(rng.below(17));
      std::vector<std::vector<float>> x(static_cast<size_t>(chunks));
      std::vector<std::vector<char>> keep(static_cast<size_t>(chunks));
      std::vector<sa::ChunkDigest> d(static_cast<size_t>(chunks));
      std::vector<uint32_t> all;  // the kept values' keys, NaNs left out
      int64_t kept = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t n = rng.below(4) == 0 ? 0 : int64_t(rng.below(601));
        for (int64_t j = 0; j < n; ++j) {
          x[size_t(c)].push_back(f == Fill::nan && c == 1 ? std::nanf("") : value(rng, f));  // chunk 1: NaNs only
          keep[size_t(c)].push_back(rng.below(5) != 0);
        }
        d[size_t(c)].build(x[size_t(c)].data(), n, [&](int64_t j) { return keep[size_t(c)][size_t(j)] != 0; });
        for (int64_t j = 0; j < n; ++j) {
          if (!keep[size_t(c)][size_t(j)]) continue;
          ++kept;
          const float v = x[size_t(c)][size_t(j)];
          if (!std::isnan(v)) all.push_back(sa::order_key(v));
        }
      }
      int64_t got_kept = 0, got_count = 0;
      for (const auto &dc : d) got_kept += dc.kept(), got_count += dc.count();
      ASSERT_EQ(got_kept, kept);
      ASSERT_EQ(got_count, int64_t(all.size()));
      const size_t n = all.size();
      for (size_t k : {size_t(1), size_t(2), n / 32 + 1, n / 3 + 1, n / 2, n - 1, n}) {
        if (k < 1 || k > n) continue;
        std::vector<uint32_t> copy = all;
        const uint32_t want = sa::kth_largest_key(copy.data(), n, k).key;
        const uint32_t got = sa::ChunkDigest::kth_largest(d.data(), chunks, k, scratch);
        ASSERT_EQ(got, want) << "fill " << int(f) << " round " << round << " k=" << k << " of " << n;
        // Per chunk: the keys above it and equal to it, as counted over its values.
        for (int64_t c = 0; c < chunks; ++c) {
          int64_t above = 0, equal = 0;
          for (size_t j = 0; j < x[size_t(c)].size(); ++j) {
            const float v = x[size_t(c)][size_t(j)];
            if (!keep[size_t(c)][size_t(j)] || std::isnan(v)) continue;
            above += sa::order_key(v) > got;
            equal += sa::order_key(v) == got;
          }
          EXPECT_EQ(d[size_t(c)].above(got), above) << "chunk " << c;
          EXPECT_EQ(d[size_t(c)].equal(got), equal) << "chunk " << c;
        }
      }
      // Counts against a key no value holds: -inf's when none is -inf, and the keys' extremes.
      for (uint32_t key : {sa::order_key(-kInf), uint32_t(0), ~uint32_t(0)})
        for (int64_t c = 0; c < chunks; ++c) {
          int64_t above = 0, equal = 0;
          for (size_t j = 0; j < x[size_t(c)].size(); ++j) {
            const float v = x[size_t(c)][size_t(j)];
            if (!keep[size_t(c)][size_t(j)] || std::isnan(v)) continue;
            above += sa::order_key(v) > key;
            equal += sa::order_key(v) == key;
          }
          EXPECT_EQ(d[size_t(c)].above(key), above);
          EXPECT_EQ(d[size_t(c)].equal(key), equal);
        }
    }
}

// A digest is rebuilt in place call after call (the selector's scratch keeps it): a smaller
// chunk after a larger, an empty one, a cleared one.
TEST(ChunkDigest, RebuiltInPlace) {
  sa::ChunkDigest d;
  std::vector<float> big(500), small = {3.f, -1.f, 3.f};
  for (size_t j = 0; j < big.size(); ++j) big[j] = float(j);
  auto all = [](int64_t) { return true; };
  std::vector<uint32_t> scratch;
  d.build(big.data(), int64_t(big.size()), all);
  EXPECT_EQ(sa::key_float(sa::ChunkDigest::kth_largest(&d, 1, 10, scratch)), 490.f);
  d.build(small.data(), 3, all);
  EXPECT_EQ(d.count(), 3);
  EXPECT_EQ(sa::key_float(sa::ChunkDigest::kth_largest(&d, 1, 2, scratch)), 3.f);
  EXPECT_EQ(d.equal(sa::order_key(3.f)), 2);
  EXPECT_EQ(d.above(sa::order_key(-1.f)), 2);
  d.build(big.data(), 0, all);
  EXPECT_EQ(d.count(), 0);
  EXPECT_EQ(d.above(sa::order_key(0.f)), 0);
  d.build(small.data(), 3, all);
  d.clear();
  EXPECT_EQ(d.kept(), 0);
  EXPECT_EQ(d.equal(sa::order_key(3.f)), 0);
}

}  // namespace
