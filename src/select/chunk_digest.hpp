// The k-th largest of values spread over chunks, found from digests that each chunk's own task
// builds: a decode step's 8 lists of 8192 page scores arrive as 16 chunks each, from 128 tasks,
// and one serial kth_largest per list over all its pages was the step's longest serial piece
// on 16 threads. A digest holds its chunk's order keys (order_key.hpp, NaNs left out) grouped
// by their top digit; the k-th largest over the chunks then walks the digits from the top,
// summing the chunks' bucket sizes, and runs kth_largest_key on the one bucket it lands in.
// The result is the same key kth_largest_key finds over every chunk's values at once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "select/order_key.hpp"

namespace sa {

class ChunkDigest {
 public:
  // Keeps the values x[j], j < n, with keep(j), and counts them (NaNs included in kept()).
  template <class Keep>
  void build(const float *x, int64_t n, Keep &&keep) {
    raw_.resize(size_t(n));
    size_t m = 0;
    int64_t kept = 0;
    uint32_t lo = kDigits, hi = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (!keep(j)) continue;
      ++kept;
      if (x[j] != x[j]) continue;  // NaN: ranked below everything, never counted
      const uint32_t key = order_key(x[j]);
      raw_[m++] = key;
      lo = std::min(lo, digit(key));
      hi = std::max(hi, digit(key));
    }
    kept_ = kept;
    raw_.resize(m);
    sort_by_digit(lo, hi);
  }
  void clear() {
    kept_ = 0;
    raw_.clear();
    keys_.clear();
    lo_ = 1;
    hi_ = 0;
  }

  int64_t kept() const { return kept_; }                // values kept, NaNs too
  int64_t count() const { return int64_t(keys_.size()); }  // keys (the kept values but NaNs)
  int64_t above(uint32_t key) const;                    // keys > key
  int64_t equal(uint32_t key) const;                    // keys == key

  // The k-th largest key over d[0, chunks) for 0 < k <= the sum of count(); scratch: the
  // caller's (the bucket it lands in, copied).
  static uint32_t kth_largest(const ChunkDigest *d, int64_t chunks, size_t k, std::vector<uint32_t> &scratch);

 private:
  static constexpr int kShift = 21;            // the top 11 bits of a key
  static constexpr uint32_t kDigits = 1u << 11;
  static uint32_t digit(uint32_t key) { return key >> kShift; }
  void sort_by_digit(uint32_t lo, uint32_t hi);
  // Keys of digit b: keys_[start_[b - lo_], start_[b - lo_ + 1]) for lo_ <= b <= hi_.
  int64_t bucket_begin(uint32_t b) const { return start_[b - lo_]; }
  int64_t bucket_size(uint32_t b) const { return b < lo_ || b > hi_ ? 0 : start_[b - lo_ + 1] - start_[b - lo_]; }

  int64_t kept_ = 0;
  std::vector<uint32_t> raw_, keys_;  // raw_: in value order; keys_: grouped by digit, ascending
  std::vector<uint32_t> start_;
  uint32_t lo_ = 1, hi_ = 0;  // digits present (none: lo_ > hi_)
};

}  // namespace sa
