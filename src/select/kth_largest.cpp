#include "select/kth_largest.hpp"

#include <algorithm>
#include <functional>
#include <limits>

namespace sa {

float kth_largest(const KernelTable &kernels, const float *x, int64_t n, size_t k, std::vector<float> &kept) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // The smallest of the maxima of k disjoint stretches of x is reached by at least k values,
  // so the answer is at least that floor, and only values reaching it are ranked. Whatever
  // the maxima were (NaN among them), counting at least k values >= floor proves it a floor.
  const int64_t stretch = n / int64_t(k);
  float floor = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < k; ++i) floor = std::min(floor, kernels.max_of(x + int64_t(i) * stretch, stretch));
  if (!(floor >= kNegInf)) floor = kNegInf;
  kept.resize(size_t(n));
  for (;;) {
    size_t c = 0;
    for (int64_t j = 0; j < n; ++j) {  // branch-free: no NaN passes
      kept[c] = x[j];
      c += x[j] >= floor;
    }
    if (c >= k) {
      std::nth_element(kept.begin(), kept.begin() + long(k - 1), kept.begin() + long(c), std::greater<float>());
      return kept[k - 1];
    }
    if (floor == kNegInf) return kNegInf;  // fewer than k values are not NaN
    floor = kNegInf;
  }
}

}  // namespace sa
