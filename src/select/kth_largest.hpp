// The k-th largest of many floats, for the page selector's pick of its best pages (a few
// hundred out of thousands): the same value std::nth_element finds, by a radix select over
// the values' bits (one pass over every value, two over the few that share its leading bits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sa {

// The k-th largest of x[0, n) for 0 < k <= n, NaNs ranked below every other value (-inf
// when fewer than k values are not NaN); +0 and -0 rank equal. keys: the caller's scratch.
float kth_largest(const float *x, int64_t n, size_t k, std::vector<uint32_t> &keys);

}  // namespace sa
