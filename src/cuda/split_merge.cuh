// The end of a flash-decoding block, shared by the decode kernels: the block's partial states
// (running max, sum and weighted V per head, one per lane group or warp, in shared memory) are
// combined; a query with one split writes its output, otherwise the block writes its split's
// partial and the last block of the (query, group) to finish merges all splits exactly (an
// atomic counter per (query, group)). P holds the fields named here: out (o_s0..2,
// out_dtype), lse (l_s0, l_s1; null: none), part_acc [n_q][units][splits][GT][D], part_ml
// [...][GT][2], done [n_q][units] (zero between calls), units, splits. Maxima are base 2.
#pragma once

#include <cmath>
#include <cstdint>

#include "half_vec.cuh"

namespace sacuda {

constexpr float kLn2 = 0.6931471805599453f;

// The exact merge of a (query, group)'s splits, run by its last block. Each thread takes a
// float4 slice of one head's output and folds the splits in batches: a batch's maxima, sums
// and slices are loaded together (independent loads), then folded with weights 2^(m_s - M).
template <int D, int GT, int THREADS, class P>
__device__ void merge_splits(const P &p, int i, int u, int S) {
  constexpr int D4 = D / 4, kBatch = 16;
  const int h0 = u * GT;
  const int64_t part0 = (int64_t(i) * p.units + u) * p.splits;
  for (int e = threadIdx.x; e < GT * D4; e += THREADS) {
    const int g = e / D4, d4 = e % D4;
    const float4 *src = reinterpret_cast<const float4 *>(p.part_acc + (part0 * GT + g) * D) + d4;
    const float2 *ml = reinterpret_cast<const float2 *>(p.part_ml) + part0 * GT + g;
    float4 A = make_float4(0.f, 0.f, 0.f, 0.f);
    float M = -INFINITY, Lsum = 0.f;
    for (int s0 = 0; s0 < S; s0 += kBatch) {
      float2 ms[kBatch];
      float4 x[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const bool in = s0 + j < S;
        ms[j] = in ? __ldcg(ml + int64_t(s0 + j) * GT) : make_float2(-INFINITY, 0.f);
        x[j] = in ? __ldcg(src + int64_t(s0 + j) * GT * D4) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      float Mb = M;
#pragma unroll
      for (int j = 0; j < kBatch; ++j) Mb = fmaxf(Mb, ms[j].x);
      if (Mb == -INFINITY) continue;  // nothing visible so far
      const float a = exp2f(M - Mb);
      A = make_float4(A.x * a, A.y * a, A.z * a, A.w * a);
      Lsum *= a;
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const float w = exp2f(ms[j].x - Mb);  // 0 for empty splits
        A.x = fmaf(x[j].x, w, A.x);
        A.y = fmaf(x[j].y, w, A.y);
        A.z = fmaf(x[j].z, w, A.z);
        A.w = fmaf(x[j].w, w, A.w);
        Lsum = fmaf(ms[j].y, w, Lsum);
      }
      M = Mb;
    }
    const float inv = Lsum > 0.f ? 1.f / Lsum : 0.f;
    const int64_t o = i * p.o_s0 + (h0 + g) * p.o_s1 + int64_t(d4) * 4 * p.o_s2;
    store_any(p.out, o, p.out_dtype, A.x * inv);
    store_any(p.out, o + p.o_s2, p.out_dtype, A.y * inv);
    store_any(p.out, o + 2 * p.o_s2, p.out_dtype, A.z * inv);
    store_any(p.out, o + 3 * p.o_s2, p.out_dtype, A.w * inv);
    if (d4 == 0 && p.lse) p.lse[i * p.l_s0 + (h0 + g) * p.l_s1] = Lsum > 0.f ? (M + log2f(Lsum)) * kLn2 : -INFINITY;
  }
}

// Combines the block's STATES partial states of query i, group u (heads u * GT on), split
// `split` of nsplit, and finishes the query as the header says. Every thread of the block
// calls it once the states are written (it synchronizes first).
template <int D, int GT, int THREADS, int STATES, class P>
__device__ void finish_block(const P &p, int i, int u, int split, int nsplit, const float (*red_acc)[GT][D],
                             const float (*red_m)[GT], const float (*red_l)[GT]) {
  __syncthreads();
  const int h0 = u * GT;
  const int64_t part = (int64_t(i) * p.units + u) * p.splits + split;
  for (int e = threadIdx.x; e < GT * D; e += THREADS) {
    const int g = e / D, d = e % D;
    float M = -INFINITY;
    for (int s = 0; s < STATES; ++s) M = fmaxf(M, red_m[s][g]);
    float A = 0.f, Lsum = 0.f;
    if (M != -INFINITY)
      for (int s = 0; s < STATES; ++s) {
        const float w = exp2f(red_m[s][g] - M);
        A = fmaf(red_acc[s][g][d], w, A);
        Lsum = fmaf(red_l[s][g], w, Lsum);
      }
    if (nsplit == 1) {
      store_any(p.out, i * p.o_s0 + (h0 + g) * p.o_s1 + d * p.o_s2, p.out_dtype, Lsum > 0.f ? A / Lsum : 0.f);
      if (d == 0 && p.lse) p.lse[i * p.l_s0 + (h0 + g) * p.l_s1] = Lsum > 0.f ? (M + log2f(Lsum)) * kLn2 : -INFINITY;
    } else {
      p.part_acc[(part * GT + g) * D + d] = A;
      if (d == 0) {
        p.part_ml[(part * GT + g) * 2] = M;
        p.part_ml[(part * GT + g) * 2 + 1] = Lsum;
      }
    }
  }
  if (nsplit == 1) return;

  // The last block of the (query, group) to finish merges all splits.
  __shared__ bool last_s;
  __threadfence();  // this block's partials are visible before it counts itself done
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned *done = p.done + int64_t(i) * p.units + u;
    last_s = atomicAdd(done, 1u) == unsigned(nsplit - 1);
    if (last_s) *done = 0;  // every split has counted: zero for the next call
  }
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  merge_splits<D, GT, THREADS>(p, i, u, nsplit);
  __syncthreads();
}

}  // namespace sacuda
