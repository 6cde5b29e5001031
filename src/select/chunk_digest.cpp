#include "select/chunk_digest.hpp"

#include <algorithm>

#include "select/kth_largest.hpp"

namespace sa {

void ChunkDigest::sort_by_digit(uint32_t lo, uint32_t hi) {
  lo_ = lo;
  hi_ = hi;
  keys_.resize(raw_.size());
  if (raw_.empty()) {
    lo_ = 1;
    hi_ = 0;
    return;
  }
  // A counting sort over the digits the chunk holds (a chunk's scores span few of them).
  const size_t buckets = size_t(hi - lo) + 1;
  start_.assign(buckets + 1, 0);
  for (uint32_t key : raw_) ++start_[digit(key) - lo + 1];
  for (size_t b = 1; b <= buckets; ++b) start_[b] += start_[b - 1];
  std::vector<uint32_t> &next = start_;  // advanced while scattering, then moved back
  for (uint32_t key : raw_) keys_[next[digit(key) - lo]++] = key;
  for (size_t b = buckets; b > 0; --b) start_[b] = start_[b - 1];
  start_[0] = 0;
}

int64_t ChunkDigest::above(uint32_t key) const {
  const uint32_t b = digit(key);
  if (b < lo_) return count();
  if (b > hi_) return 0;
  int64_t n = count() - start_[b - lo_ + 1];  // keys of higher digits
  for (int64_t j = bucket_begin(b), e = j + bucket_size(b); j < e; ++j) n += keys_[size_t(j)] > key;
  return n;
}

int64_t ChunkDigest::equal(uint32_t key) const {
  const uint32_t b = digit(key);
  int64_t n = 0;
  for (int64_t j = b < lo_ || b > hi_ ? 0 : bucket_begin(b), e = j + bucket_size(b); j < e; ++j)
    n += keys_[size_t(j)] == key;
  return n;
}

uint32_t ChunkDigest::kth_largest(const ChunkDigest *d, int64_t chunks, size_t k, std::vector<uint32_t> &scratch) {
  uint32_t top = 0;
  for (int64_t c = 0; c < chunks; ++c)
    if (d[c].count() > 0) top = std::max(top, d[c].hi_);
  // The digit holding the k-th largest: walked down from the highest one present.
  size_t need = k;
  uint32_t b = top;
  for (;; --b) {
    size_t n = 0;
    for (int64_t c = 0; c < chunks; ++c) n += size_t(d[c].bucket_size(b));
    if (n >= need || b == 0) break;
    need -= n;
  }
  scratch.clear();
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n = d[c].bucket_size(b);
    if (n == 0) continue;
    const uint32_t *first = d[c].keys_.data() + d[c].bucket_begin(b);
    scratch.insert(scratch.end(), first, first + n);
  }
  return kth_largest_key(scratch.data(), scratch.size(), need).key;
}

}  // namespace sa
