// Selection on a device index. Every selector ends the same way: a per-item estimated mass
// (an item is a slot for exact, a page for page; -1 marks items with no candidate slot), a
// radix select of the best items in one block per (query, KV head), and an ordered pass that
// writes sinks, the chosen items' slots and the window, ascending, then -1 padding.
// Page selection is two launches: the bounds of all pages (many blocks, each also raising the
// per-row maxima with atomics), then per (query, KV head) the masses computed into shared
// memory, selected and written out by one block.
//   exact: mass of slot j = mean over the group's heads of softmax(scale * q.k)_j (as the CPU).
//   page:  bound_g(p) = sum_d max(q_d min_d, q_d max_d) (Quest); mass of page p =
//          sum_g 2^(scale*log2e*(bound_g(p) - max_p' bound_g(p'))); top_k / page_size pages.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "core/visibility.hpp"
#include "device_index.hpp"
#include "half_vec.cuh"
#include "plugin_state.hpp"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;
constexpr int kTopThreads = 1024;
constexpr int kScoreUnroll = 4;  // rows each lane group has in flight
constexpr int kIpt = 8;          // consecutive items per thread in the ordered pass
constexpr int kHistCopies = 8;   // radix histograms per block: fewer to clear and add up than one
                                 // per warp, and warp-aggregated atomics keep contention low

struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

struct Common {
  const void *q;
  int64_t q_s0, q_s1, q_s2;
  int q_dtype;
  int n_q, H, G, D;
  int64_t n;           // slots
  int64_t first_pos;   // query i at first_pos + i
  int sinks, window;
  float scale_log2;
  const int64_t *pos;  // position of each slot (exact, after an update); null: slot s holds s
};

// Exact selection with kept positions: whether a query at qpos sees slot r, and whether the
// slot is then a sink or in the window: the rule of core/visibility.hpp, compiled for the
// device (--expt-relaxed-constexpr).
__device__ __forceinline__ bool sees_slot(const Common &c, int64_t r, int64_t qpos) {
  return sa::sees(qpos, c.pos ? c.pos[r] : r);
}
__device__ __forceinline__ bool kept_slot(const Common &c, int64_t r, int64_t qpos) {
  const int64_t p = c.pos[r];
  return sa::sees(qpos, p) && sa::in_sinks_or_window(p, qpos, c.window, c.sinks);
}

// Floats as unsigned with the same order, 0 below them all (atomicMax on floats, zero-reset).
__device__ __forceinline__ unsigned order_bits(float f) {
  const unsigned b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
__device__ __forceinline__ float from_order_bits(unsigned e) {
  return e == 0 ? -INFINITY : __uint_as_float((e & 0x80000000u) ? e & 0x7fffffffu : ~e);
}

// Candidate slots of query i: [lo, hi], visible and neither sink nor window.
__device__ __forceinline__ void candidate_range(const Common &c, int i, int64_t &lo, int64_t &hi) {
  const sa::PositionRange scored = sa::scored_positions(c.first_pos + i, c.window, c.sinks);
  lo = scored.lo;
  hi = scored.hi < c.n - 1 ? scored.hi : c.n - 1;
}

// Sums v[0..N) over the L lanes of a row (lanes xor-adjacent, L >= N, both powers of two)
// and returns, in every lane, the total of v[lane / (L / N)]. The first log2(N) steps
// exchange half of the values instead of reducing each one separately: N - 1 + log2(L / N)
// shuffles instead of N log2(L).
template <int L, int N>
__device__ __forceinline__ float reduce_spread(float (&v)[N], int lane) {
#pragma unroll
  for (int n = N, o = L / 2; n > 1; n /= 2, o /= 2) {
    const bool upper = lane & o;
#pragma unroll
    for (int k = 0; k < n / 2; ++k) {
      const float send = upper ? v[k] : v[k + n / 2];
      const float keep = upper ? v[k + n / 2] : v[k];
      v[k] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  float s = v[0];
#pragma unroll
  for (int o = L / (2 * N); o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// Dot products of the group's scaled queries with rows (keys, or page min/max) of one head.
// mode 0: q.k (exact); mode 1: sum_d max(q_d lo_d, q_d hi_d) (page bounds), computed as
// q.c + |q|.r with c = (lo + hi) / 2, r = (hi - lo) / 2: two FMAs per element and head
// instead of two products, a max and a sum. With row_max, each block raises
// row_max[query][head][g] (order_bits) to the largest score it wrote. MAXG >= G bounds the
// group; heads past G have zero queries and are not written.
template <class T, int D, int MODE, int MAXG>
__global__ void __launch_bounds__(kThreads) row_scores_kernel(const Common c, const uint16_t *rows_a,
                                                              const uint16_t *rows_b, int64_t head_stride,
                                                              int64_t n_rows, int item, float *scores,
                                                              unsigned *row_max) {
  constexpr int L = D / 8, SLOTS = kThreads / L;
  static_assert(MAXG <= L, "one lane per group member after the reduction");
  const int h = blockIdx.y, i = blockIdx.z, tid = threadIdx.x, slot = tid / L, lane = tid % L;
  const int my_g = lane / (L / MAXG);                    // the member whose total this lane holds
  const bool writer = lane % (L / MAXG) == 0 && my_g < c.G;
  __shared__ float max_s[SLOTS][MAXG];
  float qf[MAXG][8], qa[MAXG][8];
  load_query_slices<MAXG>(c.q, c.q_dtype, i * c.q_s0 + h * c.G * c.q_s1 + lane * 8 * c.q_s2, c.q_s1, c.q_s2,
                          MODE == 1 ? 0.5f * c.scale_log2 : c.scale_log2, qf, c.G);
#pragma unroll
  for (int g = 0; g < MAXG; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) qa[g][e] = fabsf(qf[g][e]);
  float best = -INFINITY;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t visible_end = c.first_pos + i;  // last visible slot
  const int64_t r0 = int64_t(blockIdx.x) * SLOTS * 8;
  float *out = scores + ((int64_t(i) * c.H + h) * c.G + my_g) * n_rows;
  for (int step = 0; step < 8; step += kScoreUnroll) {
    uint4 a[kScoreUnroll], b[kScoreUnroll];
#pragma unroll
    for (int x = 0; x < kScoreUnroll; ++x) {
      const int64_t r = r0 + (step + x) * SLOTS + slot;
      a[x] = make_uint4(0, 0, 0, 0);
      b[x] = make_uint4(0, 0, 0, 0);
      if (r < n_rows) {
        a[x] = __ldg(reinterpret_cast<const uint4 *>(rows_a + (h * head_stride + r) * D) + lane);
        if (MODE == 1) b[x] = __ldg(reinterpret_cast<const uint4 *>(rows_b + (h * head_stride + r) * D) + lane);
      }
    }
#pragma unroll
    for (int x = 0; x < kScoreUnroll; ++x) {
      const int64_t r = r0 + (step + x) * SLOTS + slot;
      float fa[8], fb[8], dot[MAXG];
      unpack8<T>(a[x], fa);
      if (MODE == 1) {
        unpack8<T>(b[x], fb);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float centre2 = fa[e] + fb[e], radius2 = fb[e] - fa[e];  // twice c and r: q carries the 1/2
          fa[e] = centre2;
          fb[e] = radius2;
        }
      }
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = MODE == 0 ? fmaf(qf[g][e], fa[e], d) : fmaf(qf[g][e], fa[e], fmaf(qa[g][e], fb[e], d));
        dot[g] = d;
      }
      const float total = reduce_spread<L, MAXG>(dot, lane);
      // exact: invisible slots take no part in the softmax; page: pages without a candidate
      // slot are not ranked.
      const bool live = r < n_rows && (MODE == 0 ? sees_slot(c, r, visible_end)
                                                 : (r * item <= hi && (r + 1) * item - 1 >= lo && lo <= hi));
      const float sc = live ? total : -INFINITY;
      best = fmaxf(best, sc);
      if (r < n_rows && writer) out[r] = sc;
    }
  }
  if (!row_max) return;
  if (writer) max_s[slot][my_g] = best;
  __syncthreads();
  if (tid < c.G) {
    float mx = -INFINITY;
    for (int sl = 0; sl < SLOTS; ++sl) mx = fmaxf(mx, max_s[sl][tid]);
    if (mx != -INFINITY) atomicMax(&row_max[(int64_t(i) * c.H + h) * c.G + tid], order_bits(mx));
  }
}

// Per (query, head, group member) row of scores: its max (page) or its log2-sum-exp2 (exact).
template <bool LSE>
__global__ void __launch_bounds__(kTopThreads) row_norm_kernel(const float *scores, int64_t n_rows, float *norm) {
  using Reduce = cub::BlockReduce<float, kTopThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float max_s;
  const float *row = scores + int64_t(blockIdx.x) * n_rows;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n_rows; j += kTopThreads) m = fmaxf(m, row[j]);
  m = Reduce(tmp).Reduce(m, MaxOp());
  if (threadIdx.x == 0) max_s = m;
  __syncthreads();
  m = max_s;
  if (!LSE || m == -INFINITY) {
    if (threadIdx.x == 0) norm[blockIdx.x] = m;
    return;
  }
  __syncthreads();
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < n_rows; j += kTopThreads) s += exp2f(row[j] - m);
  s = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) norm[blockIdx.x] = m + log2f(s);
}

// mass[i][h][r] = sum (or mean) over g of 2^(score - norm), or -1 when r is no candidate.
// norm is either floats or, with norm_bits, order_bits of the row maxima.
__global__ void mass_kernel(const Common c, const float *scores, const float *norm, const unsigned *norm_bits,
                            int64_t n_rows, int item, bool mean, float *mass) {
  const int h = blockIdx.y, i = blockIdx.z;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t base = (int64_t(i) * c.H + h) * c.G;
  const int64_t qpos = c.first_pos + i;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < n_rows; r += int64_t(gridDim.x) * blockDim.x) {
    const bool cand = c.pos ? sees_slot(c, r, qpos) && !kept_slot(c, r, qpos)
                            : lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
    float m = -1.f;
    if (cand) {
      m = 0.f;
      for (int g = 0; g < c.G; ++g) {
        const float nv = norm_bits ? from_order_bits(norm_bits[base + g]) : norm[base + g];
        const float s = scores[(base + g) * n_rows + r];
        if (nv != -INFINITY) m += exp2f(s - nv);
      }
      if (mean) m /= float(c.G);
    }
    mass[(int64_t(i) * c.H + h) * n_rows + r] = m;
  }
}

// One block per (query, KV head): choose the n_sel items of highest mass (ties: lower item
// first) and write sinks, the chosen items' candidate slots and the window, ascending.
// STAGED (page): the masses are computed from the bounds and row maxima (row_max, order_bits)
// into shared memory first; otherwise they are read from mass. With STAGED the output row
// is also assembled in shared memory (after the masses) and copied out at the end, so the
// chosen pages' slots are not stored one by one to global memory. row_max, when given, is
// put back to zeros for the next call.
template <bool STAGED>
__global__ void __launch_bounds__(kTopThreads) top_items_kernel(const Common c, const float *mass, const float *scores,
                                                                unsigned *row_max, int64_t n_items, int item,
                                                                int64_t n_sel, int32_t *out, int64_t o_s0,
                                                                int64_t o_s1, int64_t o_s2, int64_t width) {
  using Scan = cub::BlockScan<int, kTopThreads>;
  extern __shared__ float staged_s[];
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[kHistCopies][256];  // warps w and w + kHistCopies share one
  __shared__ unsigned prefix_s;
  __shared__ int need_s;
  __shared__ bool all_s;
  __shared__ int total_s;
  __shared__ float norm_s[kMaxGroup];
  const int h = blockIdx.x, i = blockIdx.y, tid = threadIdx.x;
  int32_t *o_global = out + i * o_s0 + h * o_s1;
  int32_t *o_staged = reinterpret_cast<int32_t *>(staged_s + n_items);
  // Entry `at` of the output row (at < width).
  auto put = [&](int64_t at, int32_t value) {
    if (STAGED) o_staged[at] = value;
    else o_global[at * o_s2] = value;
  };
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t pos = c.first_pos + i;
  const int64_t row_base = (int64_t(i) * c.H + h) * c.G;

  if (tid == 0) total_s = 0;
  if (row_max && tid < c.G) norm_s[tid] = from_order_bits(row_max[row_base + tid]);
  __syncthreads();
  if (row_max && tid < c.G) row_max[row_base + tid] = 0u;  // read: zero for the next call
  const float *row = mass + (int64_t(i) * c.H + h) * n_items;
  int mine = 0;
  if (STAGED) {
    // kIpt items a thread at a time, each group member's scores loaded together.
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
      float m[kIpt];
#pragma unroll
      for (int k = 0; k < kIpt; ++k) m[k] = 0.f;
      for (int g = 0; g < c.G; ++g) {
        const float nv = norm_s[g];
        const float *sg = scores + (row_base + g) * n_items;
        float sc[kIpt];
#pragma unroll
        for (int k = 0; k < kIpt; ++k) {
          const int64_t r = r0 + int64_t(k) * kTopThreads + tid;
          sc[k] = r < n_items ? sg[r] : -INFINITY;
        }
        if (nv == -INFINITY) continue;
#pragma unroll
        for (int k = 0; k < kIpt; ++k) m[k] += exp2f(sc[k] - nv);
      }
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const int64_t r = r0 + int64_t(k) * kTopThreads + tid;
        if (r >= n_items) break;
        const bool cand = lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
        staged_s[r] = cand ? m[k] : -1.f;
        mine += cand;
      }
    }
    row = staged_s;
  } else {
    for (int64_t r = tid; r < n_items; r += kTopThreads) mine += row[r] >= 0.f;
  }
  mine = __reduce_add_sync(0xffffffffu, mine);
  if ((tid & 31) == 0) atomicAdd(&total_s, mine);
  __syncthreads();

  // Radix select on the bits of non-negative floats (ordered like the values).
  const int64_t total = total_s;
  unsigned prefix = 0, mask = 0;
  int64_t need = n_sel < total ? n_sel : total;
  if (total > n_sel) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < kHistCopies * 256; b += kTopThreads) (&hist[0][0])[b] = 0;
      __syncthreads();
      for (int64_t r = tid; r < n_items; r += kTopThreads) {
        const float v = row[r];
        const unsigned bits = __float_as_uint(v);
        const int digit = v >= 0.f && (bits & mask) == prefix ? int((bits >> shift) & 255) : -1;
        // Masses crowd into few digits: one atomic per distinct digit of the warp, not per lane.
        // After the first digit most items are out of the running: whole warps skip the match.
        const unsigned active = __activemask();
        if (!__any_sync(active, digit >= 0)) continue;
        const unsigned peers = __match_any_sync(active, digit);
        if (digit >= 0 && (tid & 31) == __ffs(peers) - 1) atomicAdd(&hist[(tid / 32) % kHistCopies][digit], __popc(peers));
      }
      __syncthreads();
      // Counts from the top digit down: the digit where the running count reaches `need`.
      int count = 0;
      if (tid < 256)
        for (int w = 0; w < kHistCopies; ++w) count += hist[w][255 - tid];
      int above, all;
      Scan(scan_tmp).ExclusiveSum(count, above, all);
      if (tid < 256 && above < need && above + count >= need) {
        prefix_s = prefix | (unsigned(255 - tid) << shift);
        need_s = int(need - above);  // still to take within the digit
        all_s = above + count == need;  // the whole digit is taken: no lower digit matters
      }
      __syncthreads();
      prefix = prefix_s;
      need = need_s;
      mask |= 255u << shift;
      const bool whole_digit = all_s;
      __syncthreads();
      if (whole_digit) {  // every item >= prefix (the digit's lowest value) is chosen
        need = INT32_MAX;
        break;
      }
    }
  } else {
    prefix = 0;  // everything with mass >= 0 qualifies
    need = INT32_MAX;
  }
  // prefix is the threshold's bits; `need` items equal to it are taken, lowest first.

  if (c.pos) {  // kept positions (exact): every slot in order, kept when forced or chosen
    int64_t before = 0, ties_before = 0;
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
      const int64_t first = r0 + int64_t(tid) * kIpt;
      float v[kIpt];
      unsigned forced = 0;
      int ties = 0;
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const bool in = first + k < n_items;
        v[k] = in ? row[first + k] : -1.f;
        if (in && kept_slot(c, first + k, pos)) forced |= 1u << k;
        ties += v[k] >= 0.f && __float_as_uint(v[k]) == prefix;
      }
      int tie_rank, tie_total;
      Scan(scan_tmp).ExclusiveSum(ties, tie_rank, tie_total);
      __syncthreads();
      int64_t rank = ties_before + tie_rank;
      unsigned keep = forced;
      int count = 0;
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const unsigned bits = __float_as_uint(v[k]);
        const bool tie = v[k] >= 0.f && bits == prefix;
        if (v[k] >= 0.f && (bits > prefix || (tie && rank < need))) keep |= 1u << k;
        rank += tie;
        count += int(keep >> k & 1u);
      }
      int offset, chunk_total;
      Scan(scan_tmp).ExclusiveSum(count, offset, chunk_total);
      __syncthreads();
      int64_t at = before + offset;
      for (int k = 0; k < kIpt; ++k)
        if (keep >> k & 1u) {
          if (at < width) put(at, int32_t(first + k));
          ++at;
        }
      ties_before += tie_total;
      before += chunk_total;
    }
    for (int64_t at = (before < width ? before : width) + tid; at < width; at += kTopThreads) put(at, -1);
    return;  // exact is never staged
  }

  // Sinks first.
  int64_t written = 0;
  const int64_t sink_end = sa::sink_positions(pos, c.sinks).hi + 1;
  const int64_t a_end = sink_end < c.n ? sink_end : c.n;
  for (int64_t j = tid; j < a_end && j < width; j += kTopThreads) put(j, int32_t(j));
  written = a_end < width ? a_end : width;

  // Each thread takes kIpt consecutive items: two block scans per kTopThreads * kIpt items
  // (ties before each item, then slots before each chosen item).
  int64_t ties_before = 0, slots_before = 0;
  for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
    const int64_t first = r0 + int64_t(tid) * kIpt;
    float v[kIpt];
    int ties = 0;
#pragma unroll
    for (int k = 0; k < kIpt; ++k) {
      v[k] = first + k < n_items ? row[first + k] : -1.f;
      ties += v[k] >= 0.f && __float_as_uint(v[k]) == prefix;
    }
    int tie_rank, tie_total;
    Scan(scan_tmp).ExclusiveSum(ties, tie_rank, tie_total);
    __syncthreads();
    int64_t rank = ties_before + tie_rank;
    unsigned chosen = 0;
    int count = 0;
#pragma unroll
    for (int k = 0; k < kIpt; ++k) {
      const unsigned bits = __float_as_uint(v[k]);
      const bool tie = v[k] >= 0.f && bits == prefix;
      const bool pick = v[k] >= 0.f && (bits > prefix || (tie && rank < need));
      rank += tie;
      if (!pick) continue;
      const int64_t r = first + k;
      const int64_t s_lo = r * item > lo ? r * item : lo, s_hi = r * item + item - 1 < hi ? r * item + item - 1 : hi;
      if (s_hi < s_lo) continue;
      chosen |= 1u << k;
      count += int(s_hi - s_lo + 1);
    }
    int offset, chunk_total;
    Scan(scan_tmp).ExclusiveSum(count, offset, chunk_total);
    __syncthreads();
    int64_t at = written + slots_before + offset;
    for (int k = 0; k < kIpt; ++k) {
      if (!(chosen >> k & 1u)) continue;
      const int64_t r = first + k;
      const int64_t s_lo = r * item > lo ? r * item : lo, s_hi = r * item + item - 1 < hi ? r * item + item - 1 : hi;
      for (int64_t j = s_lo; j <= s_hi; ++j, ++at)
        if (at < width) put(at, int32_t(j));
    }
    ties_before += tie_total;
    slots_before += chunk_total;
  }
  written += slots_before;
  if (written > width) written = width;

  // The window, then padding.
  const sa::PositionRange window = sa::window_positions(pos, c.window, c.sinks);
  const int64_t w_lo = window.lo;
  const int64_t w_hi = window.hi < c.n - 1 ? window.hi : c.n - 1;
  for (int64_t j = w_lo + tid; j <= w_hi; j += kTopThreads) {
    const int64_t at = written + (j - w_lo);
    if (at < width) put(at, int32_t(j));
  }
  if (w_hi >= w_lo) written += w_hi - w_lo + 1;
  for (int64_t at = (written < width ? written : width) + tid; at < width; at += kTopThreads) put(at, -1);
  if (STAGED) {
    __syncthreads();
    for (int64_t at = tid; at < width; at += kTopThreads) o_global[at * o_s2] = o_staged[at];
  }
}

template <class T, int MODE, int MAXG>
void launch_scores_g(const Common &c, const uint16_t *a, const uint16_t *b, int64_t head_stride, int64_t n_rows,
                     int item, float *scores, unsigned *row_max, cudaStream_t s) {
  const int rows_per_block = (kThreads / (c.D / 8)) * 8;
  const dim3 grid(unsigned((n_rows + rows_per_block - 1) / rows_per_block), c.H, c.n_q);
  if (c.D == 64)
    row_scores_kernel<T, 64, MODE, MAXG><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores, row_max);
  else if (c.D == 128)
    row_scores_kernel<T, 128, MODE, MAXG><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores, row_max);
  else
    row_scores_kernel<T, 256, MODE, MAXG><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores, row_max);
  check_cuda(cudaGetLastError(), "selection scores launch");
}

template <class T, int MODE>
void launch_scores(const Common &c, const uint16_t *a, const uint16_t *b, int64_t head_stride, int64_t n_rows, int item,
                   float *scores, unsigned *row_max, cudaStream_t s) {
  if (c.G == 1) launch_scores_g<T, MODE, 1>(c, a, b, head_stride, n_rows, item, scores, row_max, s);
  else if (c.G == 2) launch_scores_g<T, MODE, 2>(c, a, b, head_stride, n_rows, item, scores, row_max, s);
  else if (c.G <= 4) launch_scores_g<T, MODE, 4>(c, a, b, head_stride, n_rows, item, scores, row_max, s);
  else launch_scores_g<T, MODE, kMaxGroup>(c, a, b, head_stride, n_rows, item, scores, row_max, s);
}

// Appends were queued on the index's stream; the last one recorded ix.appended there. The
// selection waits for that event from its own stream, and enqueues nothing on the index's
// stream: work there, or an event recorded there, during a capture of `stream` would break the
// capture (a legacy-stream record against a capturing blocking stream is refused outright).
// While `stream` is being captured the wait becomes an external-event node, since a plain wait
// on an event recorded outside the capture invalidates it: each replay of the graph then
// waits for the appends recorded before that replay.
// sa_select_batch over a paged cache: each chosen slot j of the sequence becomes the physical
// slot its page table row gives (-1 where the page is out of range: never read through).
__global__ void to_physical_kernel(int32_t *o, int64_t s0, int64_t s1, int64_t s2, int rows_per_q, int64_t width,
                                   const int32_t *table, int64_t t_s, int64_t page_size, int64_t num_pages) {
  const int64_t n = rows_per_q * width;  // entries of one query (blockIdx.y)
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / width, c = e % width;
    int32_t &x = o[blockIdx.y * s0 + r * s1 + c * s2];
    if (x < 0) continue;
    const int64_t page = table[(x / page_size) * t_s];
    x = page >= 0 && page < num_pages ? int32_t(page * page_size + x % page_size) : -1;
  }
}

void order_after_appends(const sa_plugin_index &ix, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture == cudaStreamCaptureStatusInvalidated)
    fail(SA_ERR_INVALID_ARGUMENT, "the stream's CUDA graph capture was already invalidated by an earlier operation");
  const unsigned flags = capture == cudaStreamCaptureStatusActive ? cudaEventWaitExternal : cudaEventWaitDefault;
  check_cuda(cudaStreamWaitEvent(stream, ix.appended, flags), "waiting for the index's appends");
  ix.read_elsewhere.store(true);  // an append that grows the index waits for this selection
}

}  // namespace

void index_select(const sa_plugin_index &ix, const sa_plugin_select_args &a) {
  const sa_tensor &q = *a.queries, &out = *a.indices;
  const int n_q = int(q.shape[0]), H = ix.heads, G = int(q.shape[1] / H);
  if (G > kMaxGroup) fail(SA_ERR_UNSUPPORTED, "%d query heads per KV head; CUDA selection takes at most %d", G, kMaxGroup);
  if (n_q > 65535) fail(SA_ERR_UNSUPPORTED, "%d queries in one CUDA selection (at most 65535)", n_q);
  DeviceGuard guard(ix.device);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  if (ix.stream != stream && ix.size > 0) order_after_appends(ix, stream);
  Common c{};
  c.q = q.data;
  c.q_s0 = q.strides[0];
  c.q_s1 = q.strides[1];
  c.q_s2 = q.strides[2];
  c.q_dtype = q.dtype;
  c.n_q = n_q;
  c.H = H;
  c.G = G;
  c.D = ix.dim;
  c.n = ix.size;
  c.first_pos = a.first_query_position;
  c.sinks = a.sinks;
  c.window = a.window;
  c.scale_log2 = a.scale * kLog2e;
  c.pos = ix.positions;

  const bool page = ix.kind == SA_SELECTOR_PAGE;
  const int item = page ? ix.page : 1;
  const int64_t n_items = (ix.size + item - 1) / item;
  const int64_t n_sel = page ? (a.top_k / item > 0 ? a.top_k / item : 1) : a.top_k;
  const size_t rows = size_t(n_q) * H * G;
  const size_t staged_bytes = size_t(n_items) * sizeof(float) + size_t(out.shape[2]) * sizeof(int32_t);
  constexpr size_t kStaticTop = 16 * 1024;  // the top kernel's own shared memory (12.5 KB), rounded up
  // Staged: the masses and the output row in shared memory.
  const bool staged = page && staged_bytes + kStaticTop <= size_t(max_shared_per_block(ix.device));
  const size_t scores_bytes = rows * size_t(n_items) * sizeof(float);
  const size_t norm_bytes = rows * sizeof(float);
  const size_t mass_bytes = staged ? 0 : size_t(n_q) * H * size_t(n_items) * sizeof(float);
  const void *owner = a.struct_size >= offsetof(sa_plugin_select_args, owner) + sizeof a.owner ? a.owner : nullptr;
  const StreamBuffers b = stream_buffers(owner, ix.device, stream, page ? rows * sizeof(unsigned) : 0,
                                         scores_bytes + norm_bytes + mass_bytes);
  auto *scores = static_cast<float *>(b.scratch);
  auto *norm = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + scores_bytes);
  auto *mass = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + scores_bytes + norm_bytes);
  auto *row_max = page ? static_cast<unsigned *>(b.zeroed) : nullptr;
  const auto *keys = static_cast<const uint16_t *>(page ? ix.page_min : ix.keys);
  const auto *keys_b = static_cast<const uint16_t *>(page ? ix.page_max : nullptr);
  const int64_t head_stride = page ? ix.capacity / ix.page : ix.capacity;
  if (n_items > 0) {
    if (ix.dtype == SA_DTYPE_F16)
      page ? launch_scores<F16, 1>(c, keys, keys_b, head_stride, n_items, item, scores, row_max, stream)
           : launch_scores<F16, 0>(c, keys, keys_b, head_stride, n_items, item, scores, nullptr, stream);
    else
      page ? launch_scores<BF16, 1>(c, keys, keys_b, head_stride, n_items, item, scores, row_max, stream)
           : launch_scores<BF16, 0>(c, keys, keys_b, head_stride, n_items, item, scores, nullptr, stream);
    if (!page) {
      row_norm_kernel<true><<<unsigned(rows), kTopThreads, 0, stream>>>(scores, n_items, norm);
      check_cuda(cudaGetLastError(), "selection norm launch");
    }
    if (!staged) {
      const unsigned mb = unsigned((n_items + 255) / 256 < 1024 ? (n_items + 255) / 256 : 1024);
      mass_kernel<<<dim3(mb, H, n_q), 256, 0, stream>>>(c, scores, norm, row_max, n_items, item, !page, mass);
      check_cuda(cudaGetLastError(), "selection mass launch");
    }
  }
  int32_t *o = static_cast<int32_t *>(out.data);
  if (staged) {
    static int opted[64] = {};  // dynamic shared memory beyond 48 KB, opted into per device
    if (staged_bytes + kStaticTop > 48 * 1024 && (ix.device >= 64 || opted[ix.device] < int(staged_bytes))) {
      check_cuda(cudaFuncSetAttribute(top_items_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      max_shared_per_block(ix.device) - int(kStaticTop)),
                 "cudaFuncSetAttribute");
      if (ix.device < 64) opted[ix.device] = max_shared_per_block(ix.device) - int(kStaticTop);
    }
    top_items_kernel<true><<<dim3(H, n_q), kTopThreads, staged_bytes, stream>>>(
        c, mass, scores, row_max, n_items, item, n_sel, o, out.strides[0], out.strides[1], out.strides[2], out.shape[2]);
  } else {
    top_items_kernel<false><<<dim3(H, n_q), kTopThreads, 0, stream>>>(
        c, mass, scores, row_max, n_items, item, n_sel, o, out.strides[0], out.strides[1], out.strides[2], out.shape[2]);
  }
  check_cuda(cudaGetLastError(), "top-k launch");
  const bool paged = a.struct_size >= offsetof(sa_plugin_select_args, num_pages) + sizeof a.num_pages && a.page_table;
  if (paged && out.shape[2] > 0) {
    const int64_t per_q = out.shape[1] * out.shape[2];
    const unsigned blocks = unsigned((per_q + 255) / 256 < 64 ? (per_q + 255) / 256 : 64);
    to_physical_kernel<<<dim3(blocks, n_q), 256, 0, stream>>>(o, out.strides[0], out.strides[1], out.strides[2],
                                                             int(out.shape[1]), out.shape[2], a.page_table,
                                                             a.page_table_stride, a.page_size, a.num_pages);
    check_cuda(cudaGetLastError(), "physical slot launch");
  }
}

}  // namespace sacuda
