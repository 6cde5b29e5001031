// A page's compact bound quantized on the device by a block of D threads, one dimension each:
// the steps of select/page_code.hpp (the CPU's quantize_page_bound_row), with the row's
// largest magnitude and its code sum reduced over the block (a maximum and an integer sum: the
// same values in any order), so the codes, scale and magnitude are the CPU's bits for the same
// lo and hi. One dimension a thread, not several a lane of one warp: each dimension costs
// three double divisions, which then run side by side (a one-token append's page took 3.0 us
// in a CUDA graph with a warp a page, 2.65 with a block, on an H200).
#pragma once

#include <cstdint>

#include "select/page_code.hpp"

namespace sacuda {

constexpr int kMaxCodeWarps = 8;  // D <= 256

// The largest of the warp's m >= 0 (order-preserving bits: a float's; a double's by shuffles).
__device__ __forceinline__ float warp_max(float m) {
  return __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(m)));
}
__device__ __forceinline__ double warp_max(double m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

// lo <= hi of dimension threadIdx.x (blockDim.x == D, a multiple of 32; V float, or double
// for a decoded bound) into row[d] (centre), row[D + d] (radius) and, from thread 0, *scale =
// (scale, magnitude). Every thread of the block calls it, once (two barriers).
template <class V>
__device__ __forceinline__ void quantize_page_block(V lo, V hi, int8_t *row, float2 *scale) {
  __shared__ V max_s[kMaxCodeWarps];
  __shared__ int sum_s[kMaxCodeWarps];
  const int d = threadIdx.x, D = blockDim.x, warp = d >> 5, lane = d & 31, warps = D >> 5;
  // +inf exactly when the page is not finite (a dimension's min or max is +-inf; a NaN key
  // never becomes one, and a dimension of NaN only keeps +inf and -inf).
  V m = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
  m = warp_max(m);
  if (lane == 0) max_s[warp] = m;
  __syncthreads();
  for (int w = 0; w < warps; ++w) m = max_s[w] > m ? max_s[w] : m;
  if (!(m < V(INFINITY)) || m == V(0)) {  // not finite: the bound is +inf; all zero: exactly 0
    const bool bad = !(m < V(INFINITY));
    row[d] = 0;
    row[D + d] = bad ? 127 : 0;
    if (d == 0) *scale = bad ? make_float2(INFINITY, INFINITY) : make_float2(0.f, 0.f);
    return;
  }
  const float s = sa::page_code::page_scale(double(m));
  int8_t c, r;
  const int codes = __reduce_add_sync(0xffffffffu, sa::page_code::page_dim_codes(double(lo), double(hi), double(s),
                                                                                  &c, &r));
  row[d] = c;
  row[D + d] = r;
  if (lane == 0) sum_s[warp] = codes;
  __syncthreads();
  if (d == 0) {
    int64_t total = 0;
    for (int w = 0; w < warps; ++w) total += sum_s[w];
    *scale = make_float2(s, sa::page_code::page_magnitude(s, total));
  }
}

}  // namespace sacuda
