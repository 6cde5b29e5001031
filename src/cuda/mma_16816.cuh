// The tensor-core step every kernel here uses: mma.sync m16n8k16, 16-bit inputs (the keys'
// dtype), f32 sums. Fragment layouts (PTX ISA, mma.m16n8k16), lane = 4 * g + c: A holds rows
// g and g + 8, columns 2c, 2c + 1 (registers 0, 1) and 2c + 8, 2c + 9 (registers 2, 3); B
// holds rows 2c, 2c + 1 and 2c + 8, 2c + 9 of column g; C holds rows g, g + 8 of columns 2c,
// 2c + 1. Each register holds two 16-bit values, the lower column (row of B) in the low half.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "half_vec.cuh"

namespace sacuda {

// d += a x b over one 16 x 8 x 16 tile. Not volatile: the result is its only effect, so the
// compiler may schedule it among the loads.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, BF16>::value)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to T, packed as one operand register (lo in the low half).
template <class T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  if constexpr (std::is_same<T, BF16>::value) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
  } else {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
  }
}

// 32-bit word e (0..3) of a 16-byte load: the unit a fragment register is taken from.
__device__ __forceinline__ uint32_t word_of(const uint4 &v, int e) {
  return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w;
}

// Scores of a tile of 16 keys against 8 query columns (C of mma_16816: rows g, g + 8 of
// columns 2c, 2c + 1) over STEPS k-steps of 16 dimensions. kr[x][w]: this lane's 16-byte loads
// of key rows g + 8x (step j takes words 2 (j & 1), + 1 of load j / 2); q(j): the step's B
// fragment (two registers). Even and odd steps sum into s0 and s1: two chains, not one.
template <class T, int STEPS, int KW, class QFragment>
__device__ __forceinline__ void tile_scores(const uint4 (&kr)[2][KW], QFragment q, float (&s0)[4], float (&s1)[4]) {
#pragma unroll
  for (int j = 0; j < STEPS; ++j) {
    const int e = 2 * (j & 1);
    const uint4 &ra = kr[0][j >> 1], &rb = kr[1][j >> 1];
    const uint32_t a[4] = {word_of(ra, e), word_of(rb, e), word_of(ra, e + 1), word_of(rb, e + 1)};
    const uint2 b = q(j);
    if (j & 1) mma_16816<T>(s1, a, b.x, b.y);
    else mma_16816<T>(s0, a, b.x, b.y);
  }
}

}  // namespace sacuda
