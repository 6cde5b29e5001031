// A page's compact bound quantized on the device by one warp, each lane taking dimensions
// lane, lane + 32, ...: the steps of select/page_code.hpp (the CPU's quantize_page_bound_row),
// with the row's largest magnitude, its finiteness and its code sum reduced over the warp (a
// maximum, an and, an integer sum: the same values in any order), so the codes, scale and
// magnitude are the CPU's bits for the same lo and hi. A warp, not a block: a decode step's
// append codes one page per KV head, and warp reductions need no barrier.
#pragma once

#include <cstdint>

#include "select/page_code.hpp"

namespace sacuda {

// The largest of the lanes' m >= 0 (order-preserving bits: a float's, or a double's high and
// low words in turn).
__device__ __forceinline__ float warp_max(float m) {
  return __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(m)));
}
__device__ __forceinline__ double warp_max(double m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

// lo[k] <= hi[k] of dimension lane + 32 k (V: float, or double for a decoded bound) into
// row[d] (centre), row[D + d] (radius) and, from lane 0, *scale = (scale, magnitude). Every
// lane of the warp calls it.
template <int D, class V>
__device__ __forceinline__ void quantize_page_warp(const V (&lo)[D / 32], const V (&hi)[D / 32], int8_t *row,
                                                   float2 *scale) {
  constexpr int K = D / 32;
  const int lane = threadIdx.x & 31;
  bool finite = true;
  V m = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    finite = finite && isfinite(lo[k]) && isfinite(hi[k]);
    const V a = fabs(lo[k]), b = fabs(hi[k]);
    m = a > m ? a : m;
    m = b > m ? b : m;
  }
  finite = __all_sync(0xffffffffu, finite);
  m = warp_max(finite ? m : V(0));
  if (!finite || m == V(0)) {  // not finite: the bound is +inf; all zero: exactly 0
#pragma unroll
    for (int k = 0; k < K; ++k) {
      row[lane + 32 * k] = 0;
      row[D + lane + 32 * k] = finite ? 0 : 127;
    }
    if (lane == 0) *scale = finite ? make_float2(0.f, 0.f) : make_float2(INFINITY, INFINITY);
    return;
  }
  const float s = sa::page_code::page_scale(double(m));
  int codes = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    int8_t c, r;
    codes += sa::page_code::page_dim_codes(double(lo[k]), double(hi[k]), double(s), &c, &r);
    row[lane + 32 * k] = c;
    row[D + lane + 32 * k] = r;
  }
  codes = __reduce_add_sync(0xffffffffu, codes);
  if (lane == 0) *scale = make_float2(s, sa::page_code::page_magnitude(s, codes));
}

}  // namespace sacuda
