#include "select/kth_largest.hpp"

#include <limits>

#include "select/order_key.hpp"

namespace sa {

KthKey kth_largest_key(uint32_t *keys, size_t n, size_t k) {
  // Digits of 11, 11 and 10 bits from the top: each pass finds the digit of the k-th largest
  // key among the keys that share the digits found so far, then keeps only those.
  constexpr int kShift[3] = {21, 10, 0}, kBits[3] = {11, 11, 10};
  uint32_t prefix = 0;
  size_t need = k;  // rank of the answer among the kept keys
  for (int pass = 0; pass < 3; ++pass) {
    const uint32_t digits = (1u << kBits[pass]) - 1;
    uint32_t hist[2048] = {};
    for (size_t j = 0; j < n; ++j) ++hist[(keys[j] >> kShift[pass]) & digits];
    uint32_t b = digits;
    for (; hist[b] < need; --b) need -= hist[b];
    prefix |= b << kShift[pass];
    if (pass == 2) break;
    size_t kept = 0;  // branch-free: a compare-and-push mispredicts on most keys
    for (size_t j = 0; j < n; ++j) {
      keys[kept] = keys[j];
      kept += ((keys[j] >> kShift[pass]) & digits) == b;
    }
    n = kept;
  }
  return {prefix, need};
}

float kth_largest(const float *x, int64_t n, size_t k, std::vector<uint32_t> &keys) {
  // The keys of the values that are not NaN (branch-free: most are kept).
  keys.resize(size_t(n));
  size_t m = 0;
  for (int64_t j = 0; j < n; ++j) {
    keys[m] = order_key(x[j]);
    m += x[j] == x[j];
  }
  if (m < k) return -std::numeric_limits<float>::infinity();
  return key_float(kth_largest_key(keys.data(), m, k).key);
}

}  // namespace sa
