// The fuzzer's decisions, read from the input bytes (libFuzzer's or the bounded driver's). Past
// the end every read gives 0, so a short input decodes to a small scenario and each prefix of an
// input is a valid input too: libFuzzer's mutations and truncations stay meaningful.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace apifuzz {

class ByteSource {
 public:
  ByteSource(const uint8_t *data, size_t size) : data_(data), size_(size) {}

  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint64_t word(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t(byte()) << (8 * i);
    return v;
  }
  // A value in [lo, hi], reading as few bytes as the span needs.
  int64_t range(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    const uint64_t span = uint64_t(hi - lo) + 1;
    int bytes = 1;
    while (bytes < 8 && (span >> (8 * bytes)) != 0) ++bytes;
    return lo + int64_t(word(bytes) % span);
  }
  // True with probability percent / 100. A 0 byte (and so exhausted input) is false unless
  // percent is 100: past the end, optional features stay off.
  bool chance(int percent) { return int(byte() % 100) >= 100 - percent; }
  template <class T>
  T pick(std::initializer_list<T> items) {
    const T *first = items.begin();
    return first[range(0, int64_t(items.size()) - 1)];
  }
  template <class T>
  const T &pick(const std::vector<T> &items) {
    return items[size_t(range(0, int64_t(items.size()) - 1))];
  }
  // Small values most of the time, the whole range sometimes: sizes skewed toward cheap cases.
  int64_t skewed(int64_t lo, int64_t small_hi, int64_t hi) { return chance(80) ? range(lo, small_hi) : range(lo, hi); }

  size_t consumed() const { return pos_; }

 private:
  const uint8_t *data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace apifuzz
