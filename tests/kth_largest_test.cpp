// kth_largest and kth_largest_key (select/kth_largest.hpp), the page selector's threshold for
// its best pages and write_selection's for its best candidates, against sorting: random, tied,
// sorted both ways, with -inf, NaN and signed zero entries, every k.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "select/kth_largest.hpp"
#include "select/order_key.hpp"
#include "test_util.hpp"

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The k-th largest by sorting the values that are not NaN; -inf when there are fewer than k.
float sorted_kth(const std::vector<float> &x, size_t k) {
  std::vector<float> v;
  for (float f : x)
    if (!std::isnan(f)) v.push_back(f);
  if (v.size() < k) return -kInf;
  std::sort(v.begin(), v.end(), std::greater<float>());
  return v[k - 1];
}

enum class Fill { normal, ties, ascending, descending, neg_inf, nan, all_nan, zeros };

std::vector<float> make(sat::Rng &rng, Fill f, int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float v = float(rng.normal());
    switch (f) {
      case Fill::ties: v = float(rng.below(4)); break;
      case Fill::ascending: v = float(i); break;
      case Fill::descending: v = float(n - i); break;
      case Fill::neg_inf: v = rng.below(3) == 0 ? -kInf : v; break;
      case Fill::nan: v = rng.below(3) == 0 ? std::nanf("") : v; break;
      case Fill::all_nan: v = std::nanf(""); break;
      case Fill::zeros: v = rng.below(3) == 0 ? (rng.below(2) ? 0.f : -0.f) : v; break;
      case Fill::normal: break;
    }
    x[size_t(i)] = v;
  }
  return x;
}

TEST(KthLargest, EqualsSorting) {
  sat::Rng rng(7);
  std::vector<uint32_t> keys;
  for (Fill f : {Fill::normal, Fill::ties, Fill::ascending, Fill::descending, Fill::neg_inf, Fill::nan, Fill::all_nan,
                 Fill::zeros})
    for (int64_t n : {1, 2, 3, 17, 100, 1000, 8193})
      for (size_t k : {size_t(1), size_t(2), size_t(n / 32 + 1), size_t(n / 3 + 1), size_t(n - 1), size_t(n)}) {
        if (k < 1 || k > size_t(n)) continue;
        const std::vector<float> x = make(rng, f, n);
        const float want = sorted_kth(x, k);
        const float got = sa::kth_largest(x.data(), n, k, keys);
        EXPECT_TRUE(got == want || (std::isnan(got) && std::isnan(want)))
            << "fill " << int(f) << " n=" << n << " k=" << k << ": " << got << " vs " << want;
      }
}

// The k-th largest key and its rank among the keys equal to it (what write_selection's pick of
// the best candidates needs): the best k by sorting are every key above it and `rank` of those
// equal to it.
TEST(KthLargest, KeyAndRankAmongEqualKeysAsSorting) {
  sat::Rng rng(8);
  for (Fill f : {Fill::normal, Fill::ties, Fill::ascending, Fill::descending, Fill::neg_inf, Fill::zeros})
    for (int64_t n : {1, 2, 3, 17, 100, 1000, 8193})
      for (size_t k : {size_t(1), size_t(2), size_t(n / 32 + 1), size_t(n / 3 + 1), size_t(n - 1), size_t(n)}) {
        if (k < 1 || k > size_t(n)) continue;
        const std::vector<float> x = make(rng, f, n);
        std::vector<uint32_t> keys(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) keys[size_t(j)] = sa::order_key(x[size_t(j)]);
        std::vector<uint32_t> sorted = keys;
        std::sort(sorted.begin(), sorted.end(), std::greater<uint32_t>());
        const uint32_t want = sorted[k - 1];
        const size_t above = size_t(std::count_if(sorted.begin(), sorted.end(), [&](uint32_t u) { return u > want; }));
        const sa::KthKey got = sa::kth_largest_key(keys.data(), size_t(n), k);
        EXPECT_EQ(got.key, want) << "fill " << int(f) << " n=" << n << " k=" << k;
        EXPECT_EQ(got.rank, k - above) << "fill " << int(f) << " n=" << n << " k=" << k;
      }
}

}  // namespace
