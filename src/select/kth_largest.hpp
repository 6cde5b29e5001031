// The k-th largest of many values by a radix select over their order keys (order_key.hpp): one
// histogram pass over every key, two over the few that share its leading bits. The page
// selector's pick of its best pages (a few hundred out of thousands) takes the k-th largest
// float; write_selection's pick of the best candidates takes the k-th largest key and how many
// of the keys equal to it are among the best k (ties go to the lower slot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sa {

// The k-th largest of keys[0, n) for 0 < k <= n, and its rank among the keys equal to it: the
// best k are every key above `key` and `rank` (>= 1) of those equal to it. keys[0, n) is
// overwritten (each pass keeps the keys that share the digits found so far).
struct KthKey {
  uint32_t key;
  size_t rank;
};
KthKey kth_largest_key(uint32_t *keys, size_t n, size_t k);

// The k-th largest of x[0, n) for 0 < k <= n, NaNs ranked below every other value (-inf
// when fewer than k values are not NaN); +0 and -0 rank equal. keys: the caller's scratch.
float kth_largest(const float *x, int64_t n, size_t k, std::vector<uint32_t> &keys);

}  // namespace sa
