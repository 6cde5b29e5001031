// The k-th largest of many floats, for the page selector's pick of its best pages (a few
// hundred out of thousands): the same value std::nth_element finds, in one mostly vectorised
// pass and an nth_element over the few values that can reach it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kernels.hpp"

namespace sa {

// The k-th largest of x[0, n) for 0 < k <= n, NaNs ranked below every other value (-inf
// when fewer than k values are not NaN). kept: the caller's scratch.
float kth_largest(const KernelTable &kernels, const float *x, int64_t n, size_t k, std::vector<float> &kept);

}  // namespace sa
