// 16-byte vectors of f16/bf16 to and from float: the unit every kernel loads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "sparseattn.h"

namespace sacuda {

struct F16 {
  static __device__ __forceinline__ float2 pair(uint32_t w) {
    return __half22float2(*reinterpret_cast<const __half2 *>(&w));
  }
  static __device__ __forceinline__ float one(uint16_t b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ uint16_t from(float f) { return __half_as_ushort(__float2half_rn(f)); }
};

struct BF16 {
  static __device__ __forceinline__ float2 pair(uint32_t w) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w));
  }
  static __device__ __forceinline__ float one(uint16_t b) { return __bfloat162float(__ushort_as_bfloat16(b)); }
  static __device__ __forceinline__ uint16_t from(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

template <class T>
__device__ __forceinline__ void unpack8(const uint4 &raw, float f[8]) {
  const float2 a = T::pair(raw.x), b = T::pair(raw.y), c = T::pair(raw.z), d = T::pair(raw.w);
  f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
  f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}

// One element of an F32/F16/BF16 tensor as float (small, scattered reads: queries).
__device__ __forceinline__ float load_any(const void *base, int64_t off, int dtype) {
  if (dtype == SA_DTYPE_F32) return static_cast<const float *>(base)[off];
  const uint16_t b = static_cast<const uint16_t *>(base)[off];
  return dtype == SA_DTYPE_F16 ? F16::one(b) : BF16::one(b);
}

// q[off + g * s1 + c * s2] * scale for g < G, c < 8 (one lane's slice of G heads; 0 for
// g >= n). The dtype is tested once, so the loads are all issued before the first is used.
template <int G>
__device__ __forceinline__ void load_query_slices(const void *q, int dtype, int64_t off, int64_t s1, int64_t s2,
                                                  float scale, float out[][8], int n = G) {
  if (dtype == SA_DTYPE_F32) {
    const float *f = static_cast<const float *>(q) + off;
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int c = 0; c < 8; ++c) out[g][c] = g < n ? f[g * s1 + c * s2] : 0.f;
  } else {
    const uint16_t *h = static_cast<const uint16_t *>(q) + off;
    uint16_t raw[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int c = 0; c < 8; ++c) raw[g][c] = g < n ? h[g * s1 + c * s2] : uint16_t(0);
    const bool f16 = dtype == SA_DTYPE_F16;
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int c = 0; c < 8; ++c) out[g][c] = f16 ? F16::one(raw[g][c]) : BF16::one(raw[g][c]);
  }
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int c = 0; c < 8; ++c) out[g][c] *= scale;
}

__device__ __forceinline__ void store_any(void *base, int64_t off, int dtype, float v) {
  if (dtype == SA_DTYPE_F32) {
    static_cast<float *>(base)[off] = v;
    return;
  }
  static_cast<uint16_t *>(base)[off] = dtype == SA_DTYPE_F16 ? F16::from(v) : BF16::from(v);
}

}  // namespace sacuda
