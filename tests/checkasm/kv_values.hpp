// Elements of K/V rows in each dtype: writing them, reading them back as double, and the
// exact dot product of a query head with a row, from which the error bounds are scaled.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/half.hpp"
#include "sparseattn.h"

namespace checkasm {

inline int64_t dtype_bytes(sa_dtype dt) { return dt == SA_DTYPE_F32 ? 4 : 2; }

// Element i of `base` := x rounded to the dtype.
inline void store_element(void *base, int64_t i, sa_dtype dt, float x) {
  if (dt == SA_DTYPE_F32) static_cast<float *>(base)[i] = x;
  else if (dt == SA_DTYPE_F16) static_cast<uint16_t *>(base)[i] = sa::f32_to_f16(x);
  else static_cast<uint16_t *>(base)[i] = sa::f32_to_bf16(x);
}

// 16-bit formats widen to f32 exactly, so double holds every element as the kernels see it.
inline double load_element(const void *base, int64_t i, sa_dtype dt) {
  if (dt == SA_DTYPE_F32) return static_cast<const float *>(base)[i];
  if (dt == SA_DTYPE_F16) return sa::f16_to_f32(static_cast<const uint16_t *>(base)[i]);
  return sa::bf16_to_f32(static_cast<const uint16_t *>(base)[i]);
}

// Bytes no kernel may read: a NaN there poisons any result that uses it.
inline void store_poison(void *base, int64_t i, sa_dtype dt) {
  store_element(base, i, dt, std::numeric_limits<float>::quiet_NaN());
}

struct ExactDot {
  double value = 0;      // q . row in double: off by ~D 2^-53, nothing next to f32 errors
  double magnitude = 0;  // sum |q_d row_d|: what the rounding error of a float sum scales with
};

inline ExactDot exact_dot(const float *q, const void *base, int64_t first, int D, sa_dtype dt) {
  ExactDot r;
  for (int d = 0; d < D; ++d) {
    const double p = double(q[d]) * load_element(base, first + d, dt);
    r.value += p;
    r.magnitude += std::fabs(p);
  }
  return r;
}

}  // namespace checkasm
