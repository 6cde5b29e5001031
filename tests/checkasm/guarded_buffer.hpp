// An f32 output buffer between two canary margins. Every element starts as the canary (a NaN
// with a payload no kernel computes); a kernel that writes past its output changes a margin,
// and an element it should have left alone no longer holds the canary.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace checkasm {

class GuardedBuffer {
 public:
  static constexpr uint32_t kCanaryBits = 0x7fc5ca11u;
  static constexpr int64_t kMargin = 32;  // floats each side: two AVX-512 vectors

  explicit GuardedBuffer(int64_t n) : n_(n), all_(size_t(n + 2 * kMargin), canary()) {}

  float *data() { return all_.data() + kMargin; }
  const float *data() const { return all_.data() + kMargin; }
  float &operator[](int64_t i) { return data()[i]; }
  float operator[](int64_t i) const { return data()[i]; }
  int64_t size() const { return n_; }

  static float canary() {
    float f;
    std::memcpy(&f, &kCanaryBits, 4);
    return f;
  }
  static bool is_canary(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b == kCanaryBits;
  }
  // Both margins still hold the canary.
  bool margins_intact() const {
    for (int64_t i = 0; i < kMargin; ++i)
      if (!is_canary(all_[size_t(i)]) || !is_canary(all_[size_t(kMargin + n_ + i)])) return false;
    return true;
  }

 private:
  int64_t n_;
  std::vector<float> all_;
};

}  // namespace checkasm
