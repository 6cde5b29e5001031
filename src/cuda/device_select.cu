// Selection on a device index. Every selector ends the same way: a per-item estimated mass
// (an item is a slot for exact, a page for page; -1 marks items with no candidate slot), a
// radix select of the best items in one block per (query, KV head), and an ordered pass that
// writes sinks, the chosen items' slots and the window, ascending, then -1 padding.
// Page selection is two launches: the bounds of all pages (resident blocks streaming the
// pages' int8 codes through the tensor cores, each also raising the per-row maxima with
// atomics), then the masses over many blocks, each choosing its own
// best pages, the last block of each (query, KV head) choosing among those lists and writing
// the row (page_cand_kernel; rows whose lists do not fit one block: page_top_kernel, the
// masses' histogram over many blocks; rows of more than 65536 pages or more than 2048
// chosen: the masses computed into shared memory, selected and written by one block).
// Exact selection: the scores (with each block's softmax partials), each row's
// log-sum-exp from those, then for rows of 16K slots or more the masses made by the first of
// four radix passes over many blocks and the row written over many blocks (count, then
// write); shorter rows take the masses and one block's top-k. Exact selection reads the
// index's keys or the host's K (borrow_keys), and makes a list per KV head or per query head.
//   exact: mass of slot j = mean over the group's heads of softmax(scale * q.k)_j (as the CPU).
//   page:  bound_g(p) = the CPU page selector's coded upper bound of Quest's
//          scale*log2e*sum_d max(q_d min_d, q_d max_d) (select/page_code.hpp); mass of page p =
//          sum_g 2^(bound_g(p) - max_p' bound_g(p')); top_k / page_size pages.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <type_traits>

#include "core/visibility.hpp"
#include "dependent_launch.cuh"
#include "device_index.hpp"
#include "half_vec.cuh"
#include "select/page_code.hpp"
#include "plugin_state.hpp"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;
constexpr int kTopThreads = 1024;
// Rows each lane group scores in a block, and has in flight: exact keys. Measured on an H200
// (109.7 -> 92.7 us at 128K): longer blocks amortise the query load and the row-maximum atomics.
constexpr int kExactSteps = 64, kExactUnroll = 8;
constexpr int kIpt = 8;          // consecutive items per thread in the ordered pass

struct Common {
  const void *q;
  int64_t q_s0, q_s1, q_s2;
  int q_dtype;
  int n_q, H, G, D;    // H lists of G queries each (one list per KV head, or per query head)
  int kv_group;        // lists per KV head: list h reads KV head h / kv_group (1, or G with per_query_head)
  int64_t n;           // slots
  int64_t first_pos;   // query i at first_pos + i
  int sinks, window;
  float scale_log2;
  // Kept positions (after an update): slot r of KV head kh holds pos[kh * pos_stride + r]
  // (pos_stride 0: one row for every head); null: slot s holds position s. Page selector:
  // page r of head h holds positions min_pos..max_pos[h * range_stride + r].
  const int64_t *pos;
  int64_t pos_stride;
  const int64_t *min_pos, *max_pos;
  int64_t range_stride;
};

// The position slot r holds for list h (its KV head's row of kept positions; r without them).
__device__ __forceinline__ int64_t slot_position(const Common &c, int h, int64_t r) {
  return c.pos ? c.pos[(c.pos_stride ? int64_t(h / c.kv_group) * c.pos_stride : 0) + r] : r;
}
// Whether a query at qpos sees slot r of list h, and whether the slot is then a sink or in the
// window: the rule of core/visibility.hpp, compiled for the device (--expt-relaxed-constexpr).
__device__ __forceinline__ bool sees_slot(const Common &c, int h, int64_t r, int64_t qpos) {
  return sa::sees(qpos, slot_position(c, h, r));
}
__device__ __forceinline__ bool kept_slot(const Common &c, int h, int64_t r, int64_t qpos) {
  const int64_t p = slot_position(c, h, r);
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

// Whether item r (of `item` slots) of KV head h may hold a candidate of query i (lo, hi its
// candidate_range): its slots overlap [lo, hi]; with page position ranges, its positions
// overlap the query's scored positions (the CPU page selector's usable pages).
// RANGES: whether the kernel was compiled for an index with page position ranges (refilled);
// the page kernels of an index never refilled take the slot test alone, without the range code
// (with it compiled in, page select at 128K / 512K took 6-9% longer on an H200).
template <bool RANGES = true>
__device__ __forceinline__ bool item_live(const Common &c, int h, int i, int64_t r, int item, int64_t lo, int64_t hi) {
  if (!RANGES || !c.min_pos) return lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
  const sa::PositionRange use = sa::scored_positions(c.first_pos + i, c.window, c.sinks);
  const int64_t k = h * c.range_stride + r;
  return use.lo <= use.hi && c.min_pos[k] <= use.hi && c.max_pos[k] >= use.lo;
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

// sa_select_batch of page indexes, one query per sequence: what differs between sequences,
// passed as a kernel parameter (no copy to the device, nothing to allocate, and a CUDA graph
// capture keeps it). Sequence b of a chunk is query b of Common, whose first_pos and n are
// replaced by the sequence's.
constexpr int kBatchChunk = 64;  // sequences per launch: the table stays within 4 KB of parameters
struct BatchSeq {
  const int8_t *codes;      // the index's page codes, [H][head_stride][2 D]
  const float2 *scales;     // and (scale, magnitude), [H][head_stride]
  int64_t head_stride;
  int64_t n;                // slots
  int64_t position;         // of the query
  int64_t scores_off;       // floats before the sequence's [H][G][pages] scores
};
struct BatchTable {
  BatchSeq s[kBatchChunk];
};

__device__ __forceinline__ Common sequence_common(const Common &c, const BatchSeq &e, int b) {
  Common cs = c;
  cs.n = e.n;
  cs.first_pos = e.position - b;  // query b sits at first_pos + b
  return cs;
}

// Exact scores: scale * log2e * q.k for the G queries of list h and every key row of its KV
// head kh = h / kv_group, row r at keys + kh * head_stride + r * row_stride (elements): the
// index's own copy ([heads][capacity][D]) or the host's K (any row and head strides, rows on
// 16-byte boundaries). Invisible slots score -inf. Besides the scores, each block leaves, per
// query, the largest score of its rows and the sum of 2^(score - that largest) (an online
// softmax over its rows, partial[row][block]), so a row's log-sum-exp is a pass over these
// partials, not over its scores: at 512K keys that pass read 64 MB of scores (41 us on an H200).
// Grid (chunk * H + list, query): the lists' blocks of one chunk of rows run together, so on
// the host's token-major K ([n, H_kv, D]: a head's rows 2 KB apart) they read the same DRAM
// pages at the same time, as one head's contiguous rows of the index's copy are read.
template <class T, int D, int MAXG>
__global__ void __launch_bounds__(kThreads) key_scores_kernel(const Common c, const uint16_t *keys,
                                                              int64_t head_stride, int64_t row_stride, int64_t n_rows,
                                                              float *scores, float2 *partial) {
  constexpr int L = D / 8, SLOTS = kThreads / L;
  static_assert(MAXG <= L, "one lane per group member after the reduction");
  const int i = blockIdx.y, h = int(blockIdx.x % unsigned(c.H)), kh = h / c.kv_group;
  const unsigned chunk = blockIdx.x / unsigned(c.H), chunks = gridDim.x / unsigned(c.H);
  const int tid = threadIdx.x, slot = tid / L, lane = tid % L;
  const int my_g = lane / (L / MAXG);  // the member whose total this lane holds
  const bool writer = lane % (L / MAXG) == 0 && my_g < c.G;
  __shared__ float2 part_s[SLOTS][MAXG];
  float qf[MAXG][8];
  load_query_slices<MAXG>(c.q, c.q_dtype, i * c.q_s0 + h * c.G * c.q_s1 + lane * 8 * c.q_s2, c.q_s1, c.q_s2,
                          c.scale_log2, qf, c.G);
  const int64_t visible_end = c.first_pos + i;  // the query's position
  const int64_t r0 = int64_t(chunk) * SLOTS * kExactSteps;
  const uint16_t *rows = keys + int64_t(kh) * head_stride + lane * 8;
  const int64_t row = (int64_t(i) * c.H + h) * c.G + my_g;
  float *out = scores + row * n_rows;
  float m = -INFINITY, l = 0.f;  // this lane's rows so far (writers)
  for (int step = 0; step < kExactSteps; step += kExactUnroll) {
    uint4 a[kExactUnroll];
#pragma unroll
    for (int x = 0; x < kExactUnroll; ++x) {
      const int64_t r = r0 + (step + x) * SLOTS + slot;
      a[x] = r < n_rows ? __ldg(reinterpret_cast<const uint4 *>(rows + r * row_stride)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int x = 0; x < kExactUnroll; ++x) {
      const int64_t r = r0 + (step + x) * SLOTS + slot;
      float fa[8], dot[MAXG];
      unpack8<T>(a[x], fa);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(qf[g][e], fa[e], d);
        dot[g] = d;
      }
      const float total = reduce_spread<L, MAXG>(dot, lane);
      if (r >= n_rows || !writer) continue;
      const float sc = sees_slot(c, h, r, visible_end) ? total : -INFINITY;  // invisible: no part in the softmax
      out[r] = sc;
      if (sc == -INFINITY) continue;
      if (sc > m) {
        l = l * exp2f(m - sc) + 1.f;
        m = sc;
      } else {
        l += exp2f(sc - m);
      }
    }
  }
  if (writer) part_s[slot][my_g] = make_float2(m, l);
  __syncthreads();
  if (tid < c.G) {
    float mx = -INFINITY, sum = 0.f;
    for (int sl = 0; sl < SLOTS; ++sl) mx = fmaxf(mx, part_s[sl][tid].x);
    if (mx != -INFINITY)
      for (int sl = 0; sl < SLOTS; ++sl)
        if (part_s[sl][tid].x != -INFINITY) sum += part_s[sl][tid].y * exp2f(part_s[sl][tid].x - mx);
    partial[((int64_t(i) * c.H + h) * c.G + tid) * chunks + chunk] = make_float2(mx, sum);
  }
}

// Per (query, list, group member) row of exact scores: its log2-sum-exp2 from the blocks'
// partials (key_scores_kernel), -inf when the query sees no slot.
constexpr int kLseThreads = 256;
__global__ void __launch_bounds__(kLseThreads) partial_lse_kernel(const float2 *partial, int blocks, float *norm) {
  using Reduce = cub::BlockReduce<float, kLseThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float max_s;
  const float2 *p = partial + int64_t(blockIdx.x) * blocks;
  float mx = -INFINITY;
  for (int b = threadIdx.x; b < blocks; b += kLseThreads) mx = fmaxf(mx, p[b].x);
  mx = Reduce(tmp).Reduce(mx, [](float x, float y) { return fmaxf(x, y); });
  if (threadIdx.x == 0) max_s = mx;
  __syncthreads();
  mx = max_s;
  if (mx == -INFINITY) {
    if (threadIdx.x == 0) norm[blockIdx.x] = mx;
    return;
  }
  float sum = 0.f;
  for (int b = threadIdx.x; b < blocks; b += kLseThreads)
    if (p[b].x != -INFINITY) sum += p[b].y * exp2f(p[b].x - mx);
  sum = Reduce(tmp).Sum(sum);
  if (threadIdx.x == 0) norm[blockIdx.x] = mx + log2f(sum);
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
    const bool cand = c.pos && item == 1 ? sees_slot(c, h, r, qpos) && !kept_slot(c, h, r, qpos)
                                         : item_live(c, h, i, r, item, lo, hi);
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

// The radix select's keys: a candidate's mass (>= 0) as unsigned bits, which order like the
// values; non-candidates (mass -1) take no part.
__device__ __forceinline__ bool is_candidate(float v) { return v >= 0.f; }
__device__ __forceinline__ unsigned mass_key(float v) { return __float_as_uint(v) & 0x7fffffffu; }

// The keys' digits, most significant first: the exponent, then 8, 8 and 7 mantissa bits.
constexpr int kDigits = 4;
__host__ __device__ constexpr int digit_shift(int p) { return p == 0 ? 23 : p == 1 ? 15 : p == 2 ? 7 : 0; }
__host__ __device__ constexpr int digit_bits(int p) { return p == kDigits - 1 ? 7 : 8; }
constexpr int kHistCopies = 8;  // radix histograms per block (warps w and w + 8 share one): less contention
constexpr int kListCap = 4096;  // items still in the running gathered into shared memory once this few

// hist[warp % kHistCopies][digit] += 1 for each lane of the warp with digit >= 0; every lane of
// the warp calls it. Masses crowd into few digits: one atomic per distinct digit of the warp,
// not per lane; once few items are in the running, whole warps skip the match.
__device__ __forceinline__ void count_digit(int (*hist)[256], int digit) {
  if (!__any_sync(0xffffffffu, digit >= 0)) return;
  const unsigned peers = __match_any_sync(0xffffffffu, digit);
  if (digit >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1)
    atomicAdd(&hist[(threadIdx.x >> 5) % kHistCopies][digit], __popc(peers));
}

// Counts into hist the digit (key >> shift) & (bins - 1) of the candidates among a thread's
// kIpt values whose key matches prefix under mask; returns how many of them are candidates.
// Every thread of the block calls it.
__device__ __forceinline__ int count_values(int (*hist)[256], const float (&v)[kIpt], unsigned prefix, unsigned mask,
                                            int shift, int bins) {
  int candidates = 0;
#pragma unroll
  for (int k = 0; k < kIpt; ++k) {
    const unsigned key = mass_key(v[k]);
    const bool in = is_candidate(v[k]) && (key & mask) == prefix;
    candidates += is_candidate(v[k]);
    count_digit(hist, in ? int((key >> shift) & unsigned(bins - 1)) : -1);
  }
  return candidates;
}
// The same for the values src[r0 + k * THREADS + thread] (k < kIpt, below count).
template <int THREADS>
__device__ __forceinline__ int count_chunk(int (*hist)[256], const float *src, int64_t r0, int64_t count,
                                           unsigned prefix, unsigned mask, int shift, int bins) {
  float v[kIpt];
#pragma unroll
  for (int k = 0; k < kIpt; ++k) {
    const int64_t r = r0 + int64_t(k) * THREADS + threadIdx.x;
    v[k] = r < count ? src[r] : -1.f;
  }
  return count_values(hist, v, prefix, mask, shift, bins);
}

// Rows of many items whose masses are in global memory are selected by radix passes over many
// blocks (one launch per digit), each block counting its share of the row into the row's
// histogram; the last block of a row to finish picks the digit and leaves the row's state
// for the next pass, and the top kernel writes the output from the final state. Per row, in
// the zeroed buffer: the histogram, then these words (zero between calls).
constexpr int kSelFinished = 256, kSelTotal = 257, kSelPrefix = 258, kSelMask = 259, kSelNeed = 260, kSelDone = 261;
constexpr int kSelStride = 264;
constexpr int kPassThreads = 256;
constexpr int64_t kPassItems = int64_t(kPassThreads) * kIpt * 2;  // items a block counts
constexpr int64_t kManyItems = 16384;                             // rows at least this long use the passes

// Pass 0 of exact selection also makes the masses (as mass_kernel, exact, one item a slot) from
// the scores and their log-sum-exps (norm), and writes them for the later passes: the masses
// are read once less. scores null: the masses are read from mass.
__global__ void __launch_bounds__(kPassThreads) radix_pass_kernel(const Common c, const float *scores,
                                                                  const float *norm, float *mass, int64_t n_items,
                                                                  int64_t n_sel, int p, int *sel) {
  using Scan = cub::BlockScan<int, kPassThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[kHistCopies][256];
  __shared__ bool last_s;
  const int tid = threadIdx.x;
  const int64_t rr = blockIdx.x;  // (query, KV head)
  int *st = sel + rr * kSelStride;
  if (p > 0 && st[kSelDone]) return;
  const unsigned prefix = p ? unsigned(st[kSelPrefix]) : 0u, mask = p ? unsigned(st[kSelMask]) : 0u;
  const int shift = digit_shift(p), bins = 1 << digit_bits(p);
  for (int b = tid; b < kHistCopies * 256; b += kPassThreads) (&hist[0][0])[b] = 0;
  __syncthreads();
  float *row = mass + rr * n_items;
  const bool make = p == 0 && scores;
  const int h = int(rr % c.H);
  const int64_t qpos = c.first_pos + rr / c.H;
  __shared__ float norm_s[kMaxGroup];
  if (make && tid < c.G) norm_s[tid] = norm[rr * c.G + tid];
  __syncthreads();
  int mine = 0;
  for (int64_t r0 = int64_t(blockIdx.y) * kPassItems; r0 < n_items; r0 += int64_t(gridDim.y) * kPassItems)
    for (int64_t r1 = r0; r1 < r0 + kPassItems; r1 += int64_t(kPassThreads) * kIpt) {
      if (!make) {
        mine += count_chunk<kPassThreads>(hist, row, r1, n_items, prefix, mask, shift, bins);
        continue;
      }
      float v[kIpt];
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const int64_t r = r1 + int64_t(k) * kPassThreads + tid;
        v[k] = -1.f;
        if (r >= n_items || !sees_slot(c, h, r, qpos) || kept_slot(c, h, r, qpos)) continue;
        float m = 0.f;
        for (int g = 0; g < c.G; ++g)
          if (norm_s[g] != -INFINITY) m += exp2f(scores[(rr * c.G + g) * n_items + r] - norm_s[g]);
        v[k] = m / float(c.G);
      }
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const int64_t r = r1 + int64_t(k) * kPassThreads + tid;
        if (r < n_items) row[r] = v[k];
      }
      mine += count_values(hist, v, prefix, mask, shift, bins);
    }
  __syncthreads();
  for (int b = tid; b < bins; b += kPassThreads) {
    int n = 0;
    for (int w = 0; w < kHistCopies; ++w) n += hist[w][b];
    if (n) atomicAdd(&st[b], n);
  }
  if (p == 0) {
    mine = __reduce_add_sync(0xffffffffu, mine);
    if ((tid & 31) == 0 && mine) atomicAdd(&st[kSelTotal], mine);
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) last_s = atomicAdd(&st[kSelFinished], 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  // The row's last block: the digit where the running count reaches `need`, from the top.
  volatile int *vst = st;
  const int64_t total = p == 0 ? vst[kSelTotal] : 0;
  const int64_t need = p == 0 ? n_sel : vst[kSelNeed];
  const int b = bins - 1 - tid;
  const int count = b >= 0 ? vst[b] : 0;
  int above, all;
  Scan(scan_tmp).ExclusiveSum(count, above, all);
  __syncthreads();
  if (b >= 0) st[b] = 0;
  if (tid == 0) {
    st[kSelFinished] = 0;
    st[kSelTotal] = 0;
  }
  if (p == 0 && total <= n_sel) {  // every candidate is chosen
    if (tid == 0) {
      st[kSelPrefix] = 0;
      st[kSelNeed] = INT32_MAX;
      st[kSelDone] = 1;
    }
    return;
  }
  if (b >= 0 && above < need && above + count >= need) {
    const bool whole = above + count == need;
    st[kSelPrefix] = int(prefix | (unsigned(b) << shift));
    st[kSelMask] = int(mask | (unsigned(bins - 1) << shift));
    st[kSelNeed] = whole ? INT32_MAX : int(need - above);
    st[kSelDone] = whole || p == kDigits - 1;
  }
}

// One block per (query, KV head): choose the n_sel items of highest mass (ties: lower item
// first) and write sinks, the chosen items' candidate slots and the window, ascending.
// STAGED (page): the masses are computed from the bounds and row maxima (row_max, order_bits)
// into shared memory first; otherwise they are read from mass. With STAGED the output row
// is also assembled in shared memory (after the masses) and copied out at the end, so the
// chosen pages' slots are not stored one by one to global memory. row_max, when given, is
// put back to zeros for the next call.
// The threshold is a radix select on the masses' bits, four digits (the first counted while
// the masses are staged, or read for the candidate count); as soon as few enough items are
// still in the running, they are gathered into shared memory and the later digits count
// only them.
// The block of query i and KV head h: mass_row its masses (not STAGED), scores_qh its
// [G][n_items] scores (STAGED), row_max_qh its [G] maxima or null, o_global its output row,
// given its state after radix_pass_kernel (the threshold found; put back to zeros) or null.
template <bool STAGED>
__device__ __forceinline__ void top_items(const Common &c, int i, int h, const float *mass_row,
                                          const float *scores_qh, unsigned *row_max_qh, int64_t n_items, int item,
                                          int64_t n_sel, int32_t *o_global, int64_t o_s2, int64_t width,
                                          int *given = nullptr) {
  using Scan = cub::BlockScan<int, kTopThreads>;
  extern __shared__ float staged_s[];
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[kHistCopies][256];
  __shared__ __align__(16) float list_s[kListCap];  // the threshold digit's items; later, pages to expand
  __shared__ int list_n_s;
  __shared__ int digit_s;
  __shared__ int in_digit_s;
  __shared__ int need_s;
  __shared__ bool all_s;
  __shared__ int total_s;
  __shared__ float norm_s[kMaxGroup];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int32_t *o_staged = reinterpret_cast<int32_t *>(staged_s + n_items);
  // Entry `at` of the output row (at < width).
  auto put = [&](int64_t at, int32_t value) {
    if (STAGED) o_staged[at] = value;
    else o_global[at * o_s2] = value;
  };
  // The digit of the bins counts in hist (bins <= 256, copies added), from the top, where the
  // running count reaches need (1 <= need <= the total): digit_s, need_s (still to take within
  // the digit), all_s (the digit is taken whole) and in_digit_s (its items). Ends with the
  // block synchronised.
  auto find_digit = [&](int bins, int64_t need) {
    const int b = bins - 1 - tid;
    int count = 0;
    if (b >= 0)
      for (int w = 0; w < kHistCopies; ++w) count += hist[w][b];
    int above, all;
    Scan(scan_tmp).ExclusiveSum(count, above, all);
    if (b >= 0 && above < need && above + count >= need) {
      digit_s = b;
      need_s = int(need - above);
      all_s = above + count == need;
      in_digit_s = count;
    }
    __syncthreads();
  };
  auto clear_hist = [&]() {
    for (int b = tid; b < kHistCopies * 256; b += kTopThreads) (&hist[0][0])[b] = 0;
  };
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t pos = c.first_pos + i;

  if (tid == 0) total_s = 0;
  if (row_max_qh && tid < c.G) norm_s[tid] = from_order_bits(row_max_qh[tid]);
  clear_hist();
  __syncthreads();
  if (row_max_qh && tid < c.G) row_max_qh[tid] = 0u;  // read: zero for the next call
  const float *row = mass_row;
  int mine = 0;
  if (STAGED) {
    // kIpt items a thread at a time, each group member's scores loaded together.
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
      float m[kIpt];
#pragma unroll
      for (int k = 0; k < kIpt; ++k) m[k] = 0.f;
      for (int g = 0; g < c.G; ++g) {
        const float nv = norm_s[g];
        const float *sg = scores_qh + int64_t(g) * n_items;
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
        const bool cand = r < n_items && lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
        if (r < n_items) staged_s[r] = cand ? m[k] : -1.f;
        mine += cand;
        count_digit(hist, cand ? int(mass_key(m[k]) >> digit_shift(0)) : -1);
      }
    }
    row = staged_s;
  } else if (!given) {
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt)
      mine += count_chunk<kTopThreads>(hist, row, r0, n_items, 0u, 0u, digit_shift(0), 1 << digit_bits(0));
  }
  mine = __reduce_add_sync(0xffffffffu, mine);
  if (lane == 0) atomicAdd(&total_s, mine);
  __syncthreads();

  // prefix: the threshold's key; `need` items equal to it are taken, lowest first.
  const int64_t total = total_s;
  unsigned prefix = 0;
  int64_t need = INT32_MAX;  // everything >= prefix
  if (given) {  // chosen by the radix passes over many blocks; their state goes back to zeros
    prefix = unsigned(given[kSelPrefix]);
    need = given[kSelNeed];
    __syncthreads();
    if (tid < kSelStride - kSelPrefix) given[kSelPrefix + tid] = 0;
  } else if (total > n_sel) {
    const float *src = row;  // the items in the running: all (row), or those gathered (list_s)
    int64_t count = n_items;
    unsigned mask = 0;
    bool whole = false;
    for (int p = 0; p < kDigits && !whole; ++p) {
      const int shift = digit_shift(p), bins = 1 << digit_bits(p);
      if (p > 0) {  // the first digit was counted with the masses
        clear_hist();
        __syncthreads();
        for (int64_t r0 = 0; r0 < count; r0 += int64_t(kTopThreads) * kIpt)
          count_chunk<kTopThreads>(hist, src, r0, count, prefix, mask, shift, bins);
        __syncthreads();
      }
      find_digit(bins, p == 0 ? n_sel : need);
      prefix |= unsigned(digit_s) << shift;
      mask |= unsigned(bins - 1) << shift;
      need = need_s;
      whole = all_s;
      const int in_digit = in_digit_s;
      __syncthreads();  // the digit read before the next pass sets it
      if (whole || p == kDigits - 1 || src != row || in_digit > kListCap) continue;
      // Few enough in the running: gather them (any order: only their values matter).
      if (tid == 0) list_n_s = 0;
      __syncthreads();
      for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
        float v[kIpt];
#pragma unroll
        for (int k = 0; k < kIpt; ++k) {
          const int64_t r = r0 + int64_t(k) * kTopThreads + tid;
          v[k] = r < n_items ? row[r] : -1.f;
        }
#pragma unroll
        for (int k = 0; k < kIpt; ++k) {
          const bool take = is_candidate(v[k]) && (mass_key(v[k]) & mask) == prefix;
          const unsigned ballot = __ballot_sync(0xffffffffu, take);
          if (!ballot) continue;
          int base = 0;
          if (lane == 0) base = atomicAdd(&list_n_s, __popc(ballot));
          base = __shfl_sync(0xffffffffu, base, 0);
          if (take) list_s[base + __popc(ballot & ((1u << lane) - 1))] = v[k];
        }
      }
      __syncthreads();
      src = list_s;
      count = in_digit;
    }
    if (whole) need = INT32_MAX;
  }

  if (c.pos) {
    // Kept positions: each item chosen or not, marked in the row (the call's scratch: 1
    // chosen, -1 not; a thread marks only the items it read); keep_count_kernel and
    // keep_write_kernel then write the row over many blocks.
    float *marks = const_cast<float *>(row);
    int64_t ties_before = 0;
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kIpt) {
      const int64_t first = r0 + int64_t(tid) * kIpt;
      float v[kIpt];
      int ties = 0;
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        v[k] = first + k < n_items ? row[first + k] : -1.f;
        ties += is_candidate(v[k]) && mass_key(v[k]) == prefix;
      }
      int tie_rank, tie_total;
      Scan(scan_tmp).ExclusiveSum(ties, tie_rank, tie_total);
      __syncthreads();
      int64_t rank = ties_before + tie_rank;
#pragma unroll
      for (int k = 0; k < kIpt; ++k) {
        const unsigned key = mass_key(v[k]);
        const bool tie = is_candidate(v[k]) && key == prefix;
        const bool pick = is_candidate(v[k]) && (key > prefix || (tie && rank < need));
        rank += tie;
        if (first + k < n_items) marks[first + k] = pick ? 1.f : -1.f;
      }
      ties_before += tie_total;
    }
    return;  // the row is written by the keep kernels (never staged)
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
      ties += is_candidate(v[k]) && mass_key(v[k]) == prefix;
    }
    int tie_rank, tie_total;
    Scan(scan_tmp).ExclusiveSum(ties, tie_rank, tie_total);
    __syncthreads();
    int64_t rank = ties_before + tie_rank;
    unsigned chosen = 0;
    int count = 0;
#pragma unroll
    for (int k = 0; k < kIpt; ++k) {
      const unsigned key = mass_key(v[k]);
      const bool tie = is_candidate(v[k]) && key == prefix;
      const bool pick = is_candidate(v[k]) && (key > prefix || (tie && rank < need));
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
    // A chosen page's slots are written by a warp (its place in the row noted here), not by
    // the thread that chose it: a thread may hold several pages.
    if (tid == 0) list_n_s = 0;
    __syncthreads();
    int64_t at = written + slots_before + offset;
    for (int k = 0; k < kIpt; ++k) {
      if (!(chosen >> k & 1u)) continue;
      const int64_t r = first + k;
      const int64_t s_lo = r * item > lo ? r * item : lo, s_hi = r * item + item - 1 < hi ? r * item + item - 1 : hi;
      const int64_t start = at;
      at += s_hi - s_lo + 1;
      if (start >= width) continue;
      const int e = s_hi > s_lo ? atomicAdd(&list_n_s, 1) : kListCap / 2;
      if (e < kListCap / 2) {
        reinterpret_cast<int2 *>(list_s)[e] = make_int2(int(r), int(start));
        continue;
      }
      for (int64_t j = s_lo, a = start; j <= s_hi && a < width; ++j, ++a) put(a, int32_t(j));
    }
    __syncthreads();
    const int n_pages = list_n_s < kListCap / 2 ? list_n_s : kListCap / 2;
    for (int e = warp; e < n_pages; e += kTopThreads / 32) {
      const int2 pa = reinterpret_cast<const int2 *>(list_s)[e];
      const int64_t r = pa.x;
      const int64_t s_lo = r * item > lo ? r * item : lo, s_hi = r * item + item - 1 < hi ? r * item + item - 1 : hi;
      for (int64_t j = s_lo + lane; j <= s_hi; j += 32)
        if (pa.y + (j - s_lo) < width) put(pa.y + (j - s_lo), int32_t(j));
    }
    __syncthreads();
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

// sel: the rows' states after the radix passes (null: the block selects alone).
template <bool STAGED>
__global__ void __launch_bounds__(kTopThreads) top_items_kernel(const Common c, const float *mass, const float *scores,
                                                                unsigned *row_max, int64_t n_items, int item,
                                                                int64_t n_sel, int32_t *out, int64_t o_s0,
                                                                int64_t o_s1, int64_t o_s2, int64_t width, int *sel) {
  const int h = blockIdx.x, i = blockIdx.y;
  const int64_t qh = int64_t(i) * c.H + h;
  top_items<STAGED>(c, i, h, mass + qh * n_items, scores + qh * c.G * n_items, row_max ? row_max + qh * c.G : nullptr,
                    n_items, item, n_sel, out + i * o_s0 + h * o_s1, o_s2, width, sel ? sel + qh * kSelStride : nullptr);
}

// With kept positions the row is every slot of the head in order that is a sink or window
// slot of the query, or a candidate in a chosen item (marks: top_items's), written over
// chunks of kKeepSlots slots: one launch counts each chunk's kept slots, the next places
// them after the earlier chunks' (a sum of the counts) and pads the row with -1. One block
// writing 128K slots in order was latency bound.
constexpr int kKeepThreads = 256, kKeepIpt = 16;
constexpr int64_t kKeepSlots = int64_t(kKeepThreads) * kKeepIpt;

__device__ __forceinline__ bool slot_kept(const Common &c, int h, int64_t j, int64_t qpos, const float *marks,
                                          int item) {
  const bool forced = kept_slot(c, h, j, qpos);
  return forced || (marks[j / item] > 0.f && (item == 1 || sees_slot(c, h, j, qpos)));
}

// counts[(i * H + h) * gridDim.x + chunk]: the chunk's kept slots.
__global__ void __launch_bounds__(kKeepThreads) keep_count_kernel(const Common c, const float *marks, int64_t n_items,
                                                                  int item, int *counts) {
  using Reduce = cub::BlockReduce<int, kKeepThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int h = blockIdx.y, i = blockIdx.z;
  const int64_t qpos = c.first_pos + i, base = int64_t(blockIdx.x) * kKeepSlots;
  const float *mk = marks + (int64_t(i) * c.H + h) * n_items;
  int n = 0;
#pragma unroll 4
  for (int k = 0; k < kKeepIpt; ++k) {
    const int64_t j = base + int64_t(k) * kKeepThreads + threadIdx.x;
    n += j < c.n && slot_kept(c, h, j, qpos, mk, item);
  }
  n = Reduce(tmp).Sum(n);
  if (threadIdx.x == 0) counts[(int64_t(i) * c.H + h) * gridDim.x + blockIdx.x] = n;
}

// Each thread takes kKeepIpt consecutive slots of the chunk; the last chunk also pads.
__global__ void __launch_bounds__(kKeepThreads) keep_write_kernel(const Common c, const float *marks, int64_t n_items,
                                                                  int item, const int *counts, int32_t *out,
                                                                  int64_t o_s0, int64_t o_s1, int64_t o_s2,
                                                                  int64_t width) {
  using Scan = cub::BlockScan<int, kKeepThreads>;
  using Reduce = cub::BlockReduce<int, kKeepThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ typename Reduce::TempStorage sum_tmp;
  __shared__ int earlier_s;
  const int h = blockIdx.y, i = blockIdx.z, tid = threadIdx.x;
  const int64_t qpos = c.first_pos + i, first = int64_t(blockIdx.x) * kKeepSlots + int64_t(tid) * kKeepIpt;
  const float *mk = marks + (int64_t(i) * c.H + h) * n_items;
  const int *cnt = counts + (int64_t(i) * c.H + h) * gridDim.x;
  int earlier = 0;  // kept slots of the chunks before this one
  for (unsigned b = tid; b < blockIdx.x; b += kKeepThreads) earlier += cnt[b];
  earlier = Reduce(sum_tmp).Sum(earlier);
  if (tid == 0) earlier_s = earlier;
  unsigned keep = 0;
  int n = 0;
#pragma unroll 4
  for (int k = 0; k < kKeepIpt; ++k) {
    const int64_t j = first + k;
    if (j < c.n && slot_kept(c, h, j, qpos, mk, item)) {
      keep |= 1u << k;
      ++n;
    }
  }
  int offset, total;
  Scan(scan_tmp).ExclusiveSum(n, offset, total);
  __syncthreads();  // earlier_s is set
  int32_t *o = out + i * o_s0 + h * o_s1;
  int64_t at = int64_t(earlier_s) + offset;
  for (int k = 0; k < kKeepIpt; ++k)
    if (keep >> k & 1u) {
      if (at < width) o[at * o_s2] = int32_t(first + k);
      ++at;
    }
  if (blockIdx.x == gridDim.x - 1)
    for (int64_t e = int64_t(earlier_s) + total + tid; e < width; e += kKeepThreads) o[e * o_s2] = -1;
}

// Exact rows after the radix passes, written over many blocks (a single block walking 512K
// masses twice took most of the top-k's time). A slot is kept when it is a visible sink or
// window slot, or a candidate whose mass key is above the threshold (prefix), or equal to it
// and among the first `need` such slots. chosen_count_kernel counts per chunk of kKeepSlots
// the slots kept for sure and the ties; chosen_write_kernel gives each chunk's ties their
// ranks after the ties of the chunks before, places its kept slots after theirs, and pads.
// counts per row: prefix and need (copied from the passes' state, which the write kernel puts
// back to zeros), then two per chunk.
__global__ void __launch_bounds__(kKeepThreads) chosen_count_kernel(const Common c, const float *mass,
                                                                    int64_t n_items, int *sel, int *counts) {
  using Reduce = cub::BlockReduce<int2, kKeepThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int h = blockIdx.y, i = blockIdx.z;
  const int64_t qh = int64_t(i) * c.H + h, qpos = c.first_pos + i, base = int64_t(blockIdx.x) * kKeepSlots;
  const int *st = sel + qh * kSelStride;
  const unsigned prefix = unsigned(st[kSelPrefix]);
  int *cnt = counts + qh * (2 + 2 * int64_t(gridDim.x));
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    cnt[0] = st[kSelPrefix];
    cnt[1] = st[kSelNeed];
  }
  const float *row = mass + qh * n_items;
  int2 n = make_int2(0, 0);  // kept for sure, ties
#pragma unroll 4
  for (int k = 0; k < kKeepIpt; ++k) {
    const int64_t j = base + int64_t(k) * kKeepThreads + threadIdx.x;
    if (j >= c.n) continue;
    const float v = row[j];
    const unsigned key = mass_key(v);
    n.x += (is_candidate(v) && key > prefix) || kept_slot(c, h, j, qpos);
    n.y += is_candidate(v) && key == prefix;
  }
  n = Reduce(tmp).Reduce(n, [](int2 a, int2 b) { return make_int2(a.x + b.x, a.y + b.y); });
  if (threadIdx.x == 0) {
    cnt[2 + 2 * blockIdx.x] = n.x;
    cnt[3 + 2 * blockIdx.x] = n.y;
  }
}

__global__ void __launch_bounds__(kKeepThreads) chosen_write_kernel(const Common c, const float *mass,
                                                                    int64_t n_items, int *sel, const int *counts,
                                                                    int32_t *out, int64_t o_s0, int64_t o_s1,
                                                                    int64_t o_s2, int64_t width) {
  using Scan = cub::BlockScan<int, kKeepThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int64_t earlier_s, ties_s;
  const int h = blockIdx.y, i = blockIdx.z, tid = threadIdx.x;
  const int64_t qh = int64_t(i) * c.H + h, qpos = c.first_pos + i;
  const int *cnt = counts + qh * (2 + 2 * int64_t(gridDim.x));
  const unsigned prefix = unsigned(cnt[0]);
  const int64_t need = cnt[1];
  if (blockIdx.x == 0 && tid < kSelStride - kSelPrefix) sel[qh * kSelStride + kSelPrefix + tid] = 0;
  // The chunks before this one: ties before each (a scan), so how many of its ties it keeps.
  int64_t earlier = 0, ties = 0;  // kept slots and ties of the chunks before, in thread 0
  for (unsigned b0 = 0; b0 < blockIdx.x; b0 += kKeepThreads) {
    const unsigned b = b0 + tid;
    const int sure = b < blockIdx.x ? cnt[2 + 2 * b] : 0, t = b < blockIdx.x ? cnt[3 + 2 * b] : 0;
    int t_before, t_all;
    Scan(scan_tmp).ExclusiveSum(t, t_before, t_all);
    __syncthreads();
    const int64_t left = need - (ties + t_before);  // ties still wanted when chunk b starts
    const int kept = sure + int(left <= 0 ? 0 : left < t ? left : t);
    int k_before, k_all;
    Scan(scan_tmp).ExclusiveSum(kept, k_before, k_all);
    __syncthreads();
    earlier += k_all;
    ties += t_all;
  }
  if (tid == 0) {
    earlier_s = earlier;
    ties_s = ties;
  }
  const int64_t first = int64_t(blockIdx.x) * kKeepSlots + int64_t(tid) * kKeepIpt;
  const float *row = mass + qh * n_items;
  float v[kKeepIpt];
  int my_ties = 0;
#pragma unroll
  for (int k = 0; k < kKeepIpt; ++k) {
    v[k] = first + k < c.n ? row[first + k] : -1.f;
    my_ties += is_candidate(v[k]) && mass_key(v[k]) == prefix;
  }
  int tie_rank, tie_total;
  Scan(scan_tmp).ExclusiveSum(my_ties, tie_rank, tie_total);
  __syncthreads();  // earlier_s and ties_s are set; scan_tmp free again
  int64_t rank = ties_s + tie_rank;
  unsigned keep = 0;
  int n = 0;
#pragma unroll
  for (int k = 0; k < kKeepIpt; ++k) {
    const int64_t j = first + k;
    if (j >= c.n) continue;
    const unsigned key = mass_key(v[k]);
    const bool tie = is_candidate(v[k]) && key == prefix;
    const bool pick = kept_slot(c, h, j, qpos) || (is_candidate(v[k]) && (key > prefix || (tie && rank < need)));
    rank += tie;
    if (pick) {
      keep |= 1u << k;
      ++n;
    }
  }
  int offset, total;
  Scan(scan_tmp).ExclusiveSum(n, offset, total);
  int32_t *o = out + i * o_s0 + h * o_s1;
  int64_t at = earlier_s + offset;
  for (int k = 0; k < kKeepIpt; ++k)
    if (keep >> k & 1u) {
      if (at < width) o[at * o_s2] = int32_t(first + k);
      ++at;
    }
  if (blockIdx.x == gridDim.x - 1)
    for (int64_t e = earlier_s + total + tid; e < width; e += kKeepThreads) o[e * o_s2] = -1;
}

// sa_select_batch of page indexes: one staged block per (KV head, sequence).
__global__ void __launch_bounds__(kTopThreads) batch_top_kernel(const Common c, const BatchTable t, float *scores,
                                                                unsigned *row_max, int item, int64_t n_sel,
                                                                int32_t *out, int64_t o_s0, int64_t o_s1,
                                                                int64_t o_s2, int64_t width) {
  const int h = blockIdx.x, b = blockIdx.y;
  const BatchSeq &e = t.s[b];
  const int64_t n_items = (e.n + item - 1) / item;
  top_items<true>(sequence_common(c, e, b), b, h, nullptr, scores + e.scores_off + int64_t(h) * c.G * n_items,
                  row_max + (b * c.H + h) * c.G, n_items, item, n_sel, out + b * o_s0 + h * o_s1, o_s2, width);
}

// Page selection over many blocks (one launch after the bounds). Each block computes the
// masses of kPageChunk pages of one (query, KV head) into global memory and counts their
// leading kPageShift-less bits (exponent and 3 mantissa bits) into the row's histogram; the
// row's last block to finish finds the bin holding the threshold, marks the pages above it,
// ranks the bin's few pages exactly (mass, then the lower page) and writes the row. The
// single-block top_items ran on one SM per KV head; this spreads the masses and the counting
// over the whole device and leaves the last block a histogram scan, one read of the masses
// and the ordered write. A bin of more than kRankCap pages (masses that crowd, as equal
// keys give) is selected by top_items from the global masses, in the same block.
constexpr int kPageShift = 20;                   // bins: key >> 20
constexpr int kPageBins = 1 << (31 - kPageShift);  // 2048
constexpr int kPageChunk = 2 * kTopThreads;      // pages a block computes and counts
constexpr int kRankCap = kTopThreads;            // the threshold bin's pages, ranked one a thread
// The threshold bin's pages listed by the walk over the row, narrowed by later digits within
// the list (4 a thread). At 512K pages of the bench over 1024 share the bin: with a list of
// 1024 the last block walked the row twice more (one walk counting the digit with match_any
// took most of its samples under ncu).
constexpr int kPageListCap = 4 * kTopThreads;
constexpr int kRankWant = 64;  // narrowed to at most this before the rank (listed^2 compares)
constexpr int kMaskWords = 2048;                 // chosen-page bitmap: at most 65536 pages a row
constexpr int kSortedCap = 2 * kRankCap;         // chosen pages in order (n_sel at most this)
// Per (query, KV head) row, in the zeroed buffer (zero between calls): the histogram, then
// the count of blocks done and of candidate pages.
constexpr size_t kPageArea = (kMaskWords + 2 * kPageListCap) * sizeof(int);  // dynamic, then the staged row
constexpr size_t kPageStatic = 40 * 1024;  // page_top_kernel's static shared memory (33 KB), rounded up
constexpr int kPageFinished = kPageBins, kPageTotal = kPageBins + 1, kPageState = kPageBins + 8;

__device__ __forceinline__ unsigned lanes_below() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

// Writes the row of query i from the chosen-page bitmap (words, n_items bits): sinks, the
// chosen pages' candidate slots ascending ([lo, hi]: candidate_range), the window, then -1
// padding. sorted: room for the chosen pages' numbers (shared). Every thread of the block
// calls it.
template <int THREADS>
__device__ __forceinline__ void write_page_row(const Common &c, int i, const unsigned *words, int64_t n_items,
                                               int item, int64_t lo, int64_t hi, int *sorted,
                                               typename cub::BlockScan<int, THREADS>::TempStorage &scan,
                                               int32_t *o, int64_t o_s2, int64_t width) {
  const int tid = threadIdx.x;
  // The chosen pages in ascending order: each thread counts its words, a scan places them.
  const int n_words = int((n_items + 31) / 32);
  const int per = (n_words + THREADS - 1) / THREADS, w0 = tid * per;
  int mine = 0;
  for (int w = w0; w < w0 + per && w < n_words; ++w) mine += __popc(words[w]);
  int before, chosen;
  cub::BlockScan<int, THREADS>(scan).ExclusiveSum(mine, before, chosen);
  for (int w = w0; w < w0 + per && w < n_words; ++w)
    for (unsigned bits = words[w]; bits; bits &= bits - 1) sorted[before++] = w * 32 + __ffs(bits) - 1;
  __syncthreads();

  // Sinks, the chosen pages' candidate slots, the window, then padding (as top_items).
  const int64_t pos = c.first_pos + i;
  const int64_t sink_end = sa::sink_positions(pos, c.sinks).hi + 1;
  const int64_t a_end = sink_end < c.n ? sink_end : c.n;
  for (int64_t j = tid; j < a_end && j < width; j += THREADS) o[j * o_s2] = int32_t(j);
  int64_t written = a_end < width ? a_end : width;
  // The first candidate page starts at lo: when chosen (then first in order) it is short by
  // `short_by` slots, and so are the places of the pages after it.
  const int64_t lo_page = lo / item;
  const bool lo_chosen = chosen > 0 && lo <= hi && sorted[0] == lo_page;
  const int64_t short_by = lo_chosen ? lo - lo_page * item : 0;
  const int64_t n_slots = int64_t(chosen) * item;
  for (int64_t t = tid; t < n_slots; t += THREADS) {
    const int64_t e = n_slots <= INT32_MAX ? int(t) / item : t / item;  // a 32-bit division when it fits
    const int64_t j = int64_t(sorted[e]) * item + (t - e * item), at = written + t - short_by;
    if (j >= lo && j <= hi && at < width) o[at * o_s2] = int32_t(j);
  }
  if (chosen > 0) {
    const int64_t last = sorted[chosen - 1];
    const int64_t last_end = last * item + item - 1 < hi ? last * item + item - 1 : hi;
    written += int64_t(chosen - 1) * item + (last_end - last * item + 1) - short_by;
  }
  if (written > width) written = width;
  const sa::PositionRange window = sa::window_positions(pos, c.window, c.sinks);
  const int64_t w_hi = window.hi < c.n - 1 ? window.hi : c.n - 1;
  for (int64_t j = window.lo + tid; j <= w_hi; j += THREADS) {
    const int64_t at = written + (j - window.lo);
    if (at < width) o[at * o_s2] = int32_t(j);
  }
  if (w_hi >= window.lo) written += w_hi - window.lo + 1;
  for (int64_t at = (written < width ? written : width) + tid; at < width; at += THREADS) o[at * o_s2] = -1;
}

template <bool RANGES>
__global__ void __launch_bounds__(kTopThreads) page_top_kernel(const Common c, const float *scores,
                                                               unsigned *row_max, float *mass, int64_t n_items,
                                                               int item, int64_t n_sel, int32_t *out, int64_t o_s0,
                                                               int64_t o_s1, int64_t o_s2, int64_t width,
                                                               int *state, bool staged_row) {
  using Scan = cub::BlockScan<int, kTopThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  // Counting: the block's histogram. Finishing: the chosen-page bitmap (words), then the
  // threshold bin's (key, page) pairs, later the chosen pages in order.
  extern __shared__ __align__(16) int area_s[];  // kPageArea bytes (with top_items's static arrays: over 48 KB)
  __shared__ float norm_s[kMaxGroup];
  __shared__ int list_n_s, bin_s, need_s;
  __shared__ bool last_s;
  const int tid = threadIdx.x, lane = tid & 31;
  const int h = blockIdx.y, i = blockIdx.z;
  const int64_t qh = int64_t(i) * c.H + h;
  float *mass_row = mass + qh * n_items;
  const float *scores_qh = scores + qh * c.G * n_items;
  unsigned *row_max_qh = row_max + qh * c.G;
  int *st = state + qh * kPageState;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);

  // Count: the masses of this block's pages (as top_items<true> stages them), their bins.
  int *block_hist = area_s;
  for (int b = tid; b < kPageBins; b += kTopThreads) block_hist[b] = 0;
  if (tid < c.G) norm_s[tid] = from_order_bits(row_max_qh[tid]);
  __syncthreads();
  unsigned cands = 0;
#pragma unroll
  for (int k = 0; k < kPageChunk / kTopThreads; ++k) {
    const int64_t r = int64_t(blockIdx.x) * kPageChunk + k * kTopThreads + tid;
    float m = 0.f;
    for (int g = 0; g < c.G; ++g) {
      const float nv = norm_s[g];
      const float sc = r < n_items ? scores_qh[int64_t(g) * n_items + r] : -INFINITY;
      if (nv == -INFINITY) continue;
      m += exp2f(sc - nv);
    }
    const bool cand = r < n_items && item_live<RANGES>(c, h, i, r, item, lo, hi);
    if (r < n_items) mass_row[r] = cand ? m : -1.f;
    const int bin = cand ? int(mass_key(m) >> kPageShift) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&block_hist[bin], __popc(peers));
    cands += __popc(__ballot_sync(0xffffffffu, cand));
  }
  __syncthreads();
  for (int b = tid; b < kPageBins; b += kTopThreads)
    if (block_hist[b]) atomicAdd(&st[b], block_hist[b]);
  if (lane == 0 && cands) atomicAdd(&st[kPageTotal], int(cands));
  __threadfence();
  __syncthreads();
  if (tid == 0) last_s = atomicAdd(&st[kPageFinished], 1) == int(gridDim.x) - 1;
  __syncthreads();
  if (!last_s) return;
  __threadfence();

  // The row's last block. A page is in when its key >> shift is above prefix, and `need` of
  // those equal to it are, lowest page first. First from the row's histogram (shift 20);
  // while more than kRankWant pages share the prefix, from their next digit (11 bits, then
  // 9), counted here: from the list when it holds them all (kPageListCap), else over the row.
  // pick_bin: bin_s and need_s, where the count from the top reaches need_in (thread t takes
  // bins bins - 1 - 2t and bins - 2 - 2t); ends synchronised.
  auto pick_bin = [&](const int *counts, bool global, int bins, int64_t need_in) {
    const int b_hi = bins - 1 - 2 * tid, b_lo = b_hi - 1;
    int c_hi = 0, c_lo = 0;
    if (b_lo >= 0) {
      c_hi = global ? __ldcg(&counts[b_hi]) : counts[b_hi];
      c_lo = global ? __ldcg(&counts[b_lo]) : counts[b_lo];
    }
    int above, all;
    Scan(scan_tmp).ExclusiveSum(c_hi + c_lo, above, all);
    if (b_lo >= 0 && above < need_in && above + c_hi + c_lo >= need_in) {
      const bool in_hi = above + c_hi >= need_in;
      bin_s = in_hi ? b_hi : b_lo;
      need_s = int(need_in - above - (in_hi ? 0 : c_hi));
    }
    __syncthreads();
  };
  const int64_t total = __ldcg(&st[kPageTotal]);
  if (tid == 0) {
    bin_s = -1;  // every candidate is taken
    need_s = 0;
  }
  __syncthreads();
  if (total > n_sel) pick_bin(st, true, kPageBins, n_sel);
  for (int b = tid; b < kPageBins; b += kTopThreads) st[b] = 0;  // the state back to zeros for the next call
  if (tid == 0) {
    st[kPageFinished] = 0;
    st[kPageTotal] = 0;
  }
  if (tid < c.G) row_max_qh[tid] = 0u;
  int shift = kPageShift, prefix = bin_s;
  int64_t need = need_s;
  unsigned *words = reinterpret_cast<unsigned *>(area_s);
  int2 *list = reinterpret_cast<int2 *>(area_s + kMaskWords);
  int *hist = area_s + kMaskWords;  // over the list while a digit is counted
  // The row's masses, read from global memory once (kVisit loads in flight a thread) and
  // kept in shared memory when they fit (stage): the passes below are latency bound.
  float *stage = staged_row ? reinterpret_cast<float *>(area_s + kMaskWords + 2 * kPageListCap) : nullptr;
  bool from_stage = false;
  // fn(rr, v) for rr = r0 + k * kTopThreads + tid over the row (v = -1 past its end): a
  // warp's lanes take consecutive pages, so a ballot is one bitmap word.
  auto visit = [&](auto fn) {
    constexpr int kVisit = 8;
    for (int64_t r0 = 0; r0 < n_items; r0 += int64_t(kTopThreads) * kVisit) {
      float v[kVisit];
#pragma unroll
      for (int k = 0; k < kVisit; ++k) {
        const int64_t rr = r0 + k * kTopThreads + tid;
        v[k] = rr >= n_items ? -1.f : from_stage ? stage[rr] : __ldcg(&mass_row[rr]);
      }
#pragma unroll
      for (int k = 0; k < kVisit; ++k) fn(r0 + k * kTopThreads + tid, v[k]);
    }
  };
  int listed;
  for (;;) {
    if (tid == 0) list_n_s = 0;
    __syncthreads();
    // The pages above the prefix into the bitmap, those at it into the list.
    visit([&](int64_t rr, float v) {
      if (stage && !from_stage && rr < n_items) stage[rr] = v;
      const int d = is_candidate(v) ? int(mass_key(v) >> shift) : -2;
      const unsigned taken = __ballot_sync(0xffffffffu, d > prefix);
      if (lane == 0) words[rr >> 5] = taken;
      const bool at = d == prefix;
      const unsigned at_lanes = __ballot_sync(0xffffffffu, at);
      if (!at_lanes) return;
      int base = 0;
      if (lane == 0) base = atomicAdd(&list_n_s, __popc(at_lanes));
      base = __shfl_sync(0xffffffffu, base, 0) + __popc(at_lanes & lanes_below());
      if (at && base < kPageListCap) list[base] = make_int2(int(mass_key(v)), int(rr));
    });
    __syncthreads();
    from_stage = stage != nullptr;
    listed = list_n_s;
    if (listed <= kPageListCap) break;  // the whole prefix is listed: narrowed below, in the list alone
    if (shift == 0) break;
    // Too many at the prefix to list: count their next digit over the row.
    const int next = shift == kPageShift ? 9 : 0, bins = 1 << (shift - next);
    for (int b = tid; b < bins; b += kTopThreads) hist[b] = 0;
    __syncthreads();
    visit([&](int64_t, float v) {  // few pages are at the prefix: plain atomics, no match_any
      const bool at = is_candidate(v) && int(mass_key(v) >> shift) == prefix;
      if (at) atomicAdd(&hist[(mass_key(v) >> next) & unsigned(bins - 1)], 1);
    });
    __syncthreads();
    pick_bin(hist, false, bins, need);
    prefix = (prefix << (shift - next)) | bin_s;
    need = need_s;
    shift = next;
  }
  // A complete list longer than kRankWant: its pages' next digit counted from the list (each
  // thread holds up to kHeld entries), those above the digit taken, those at it listed again:
  // the pages that counting the digit over the row would give, without walking the row.
  constexpr int kHeld = kPageListCap / kTopThreads;
  while (listed > kRankWant && listed <= kPageListCap && shift > 0) {
    int2 me[kHeld];
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      const int e = tid + k * kTopThreads;
      me[k] = e < listed ? list[e] : make_int2(0, -1);
    }
    const int next = shift == kPageShift ? 9 : 0, bins = 1 << (shift - next);
    __syncthreads();  // the list is read: its area holds the histogram now
    for (int b = tid; b < bins; b += kTopThreads) hist[b] = 0;
    if (tid == 0) list_n_s = 0;
    __syncthreads();
    int digit[kHeld];
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      digit[k] = me[k].y >= 0 ? int((unsigned(me[k].x) >> next) & unsigned(bins - 1)) : -1;
      if (digit[k] >= 0) atomicAdd(&hist[digit[k]], 1);
    }
    __syncthreads();
    pick_bin(hist, false, bins, need);
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
      if (digit[k] > bin_s) atomicOr(&words[me[k].y >> 5], 1u << (me[k].y & 31));
      if (digit[k] >= 0 && digit[k] == bin_s) list[atomicAdd(&list_n_s, 1)] = me[k];
    }
    prefix = (prefix << (shift - next)) | bin_s;
    need = need_s;
    shift = next;
    __syncthreads();
    listed = list_n_s;
  }
  int32_t *o = out + i * o_s0 + h * o_s1;
  if (listed > kRankCap) {  // equal masses crowd: the single-block selection over the global masses
    top_items<false>(c, i, h, mass_row, nullptr, nullptr, n_items, item, n_sel, o, o_s2, width);
    return;
  }
  if (tid < listed) {  // ranked by mass, then the lower page
    const int2 me = list[tid];
    int rank = 0;
    for (int j = 0; j < listed; ++j) {
      const int2 x = list[j];
      rank += unsigned(x.x) > unsigned(me.x) || (x.x == me.x && x.y < me.y);
    }
    if (rank < need) atomicOr(&words[me.y >> 5], 1u << (me.y & 31));
  }
  __syncthreads();
  if (c.pos) {  // kept positions: the chosen pages marked (as top_items marks them) for the keep kernels
    for (int64_t r = tid; r < n_items; r += kTopThreads) mass_row[r] = words[r >> 5] >> (r & 31) & 1u ? 1.f : -1.f;
    return;
  }

  write_page_row<kTopThreads>(c, i, words, n_items, item, lo, hi, area_s + kMaskWords, scan_tmp, o, o_s2, width);
}

// Page selection from the blocks' own choices (one launch after the bounds), for rows whose
// blocks' lists fit in one block's registers (blocks * n_sel <= kCandCap). Each block computes
// the masses of kCandChunk pages of one (query, KV head) (as page_top_kernel) and chooses its
// best n_sel exactly (mass, then the lower page) from registers; a page of the row's best
// n_sel is among its block's best n_sel, so the row's last block to finish chooses among the
// blocks' lists alone (at most kCandCap entries) and writes the row. page_top_kernel's last
// block walked the row's masses from L2, several times when they crowd; here no block reads
// more than its own chunk or the lists.
constexpr int kCandThreads = 512;
constexpr int kCandPer = 4;                             // consecutive pages a thread computes
constexpr int kCandChunk = kCandThreads * kCandPer;     // 2048 pages a block
constexpr int kCandHeld = 8;                            // list entries a thread of the last block holds
constexpr int kCandCap = kCandThreads * kCandHeld;      // 4096

// A block's choice: the radix digits' histogram (later the tie words' ranks), the tie and
// chosen-page bitmaps, the scan's storage, the digit found.
template <int THREADS>
struct ChooseShared {
  typename cub::BlockScan<int, THREADS>::TempStorage scan;
  int hist[2048];
  unsigned words[kMaskWords];
  int bin, need, count, total;
  unsigned min_key, max_key;
};

// The bin of sm.hist (bins counts, from the top) where the running count reaches need (1 <=
// need <= their total): sm.bin, sm.need (still to take within it), sm.count (its count).
// Ends synchronised.
template <int THREADS>
__device__ __forceinline__ void find_bin(ChooseShared<THREADS> &sm, int bins, int need) {
  const int per = (bins + THREADS - 1) / THREADS, top = bins - 1 - int(threadIdx.x) * per;
  int mine = 0;
  for (int k = 0; k < per && top - k >= 0; ++k) mine += sm.hist[top - k];
  int above, all;
  cub::BlockScan<int, THREADS>(sm.scan).ExclusiveSum(mine, above, all);
  if (above < need && above + mine >= need)
    for (int k = 0; k < per && top - k >= 0; ++k) {
      const int n = sm.hist[top - k];
      if (above + n >= need) {
        sm.bin = top - k;
        sm.need = need - above;
        sm.count = n;
        break;
      }
      above += n;
    }
  __syncthreads();
}

// Of the entries the block's threads hold (K a thread: key = mass_key, page, live), picks the
// n_sel of highest key, equal keys lowest page first (all live ones when n_sel or fewer). A
// radix select whose digits span the keys still in the running, [lo_key, hi_key]: each pass
// counts (key - lo_key) >> shift into at most 2048 bins, takes the bins above the threshold's
// and keeps the threshold bin's range, so the span shrinks 2048-fold a pass; keys equal to
// the end are ranked by page from a bitmap of pages page0 .. page0 + 32 * n_words - 1.
// Masses crowd: digits of the keys' own bits put most of a block's pages in a few bins (and
// their atomics on a few counters), and took three passes where the span's digits take one
// or two. Every thread of the block calls it; ends synchronised.
template <int THREADS, int K>
__device__ __forceinline__ void choose_top(ChooseShared<THREADS> &sm, const unsigned (&key)[K], const int (&page)[K],
                                           const bool (&live)[K], int n_sel, int page0, int n_words,
                                           bool (&pick)[K]) {
  const int tid = threadIdx.x, lane = tid & 31;
  if (tid == 0) {
    sm.total = 0;
    sm.min_key = 0xffffffffu;
    sm.max_key = 0u;
  }
  int mine = 0;
  unsigned mn = 0xffffffffu, mx = 0u;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    pick[k] = live[k];
    mine += live[k];
    mn = live[k] && key[k] < mn ? key[k] : mn;
    mx = live[k] && key[k] > mx ? key[k] : mx;
  }
  mine = __reduce_add_sync(0xffffffffu, mine);
  mn = __reduce_min_sync(0xffffffffu, mn);
  mx = __reduce_max_sync(0xffffffffu, mx);
  __syncthreads();
  if (lane == 0 && mine) {
    atomicAdd(&sm.total, mine);
    atomicMin(&sm.min_key, mn);
    atomicMax(&sm.max_key, mx);
  }
  __syncthreads();
  const bool all = sm.total <= n_sel;
  unsigned lo_key = sm.min_key, hi_key = sm.max_key;
  __syncthreads();
  if (all) return;
#pragma unroll
  for (int k = 0; k < K; ++k) pick[k] = false;
  int need = n_sel;
  while (hi_key > lo_key) {
    const unsigned span = hi_key - lo_key;
    const int shift = span < 2048u ? 0 : 21 - __clz(span);  // (span >> shift) < 2048
    const int bins = int(span >> shift) + 1;
    for (int b = tid; b < bins; b += THREADS) sm.hist[b] = 0;
    __syncthreads();
    int digit[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      digit[k] = live[k] && key[k] >= lo_key && key[k] <= hi_key ? int((key[k] - lo_key) >> shift) : -1;
      // A warp whose entries share one digit (the crowd) adds them with one atomic.
      const unsigned in = __ballot_sync(0xffffffffu, digit[k] >= 0);
      if (!in) continue;
      const int first = __shfl_sync(0xffffffffu, digit[k], __ffs(in) - 1);
      if (__all_sync(0xffffffffu, digit[k] < 0 || digit[k] == first)) {
        if (lane == 0) atomicAdd(&sm.hist[first], __popc(in));
      } else if (digit[k] >= 0) {
        atomicAdd(&sm.hist[digit[k]], 1);
      }
    }
    __syncthreads();
    find_bin<THREADS>(sm, bins, need);
    const int bin = sm.bin;
    const bool whole = sm.need == sm.count;
#pragma unroll
    for (int k = 0; k < K; ++k) pick[k] = pick[k] || digit[k] > bin || (whole && digit[k] == bin);
    need = sm.need;
    if (whole) {
      __syncthreads();
      return;
    }
    lo_key += unsigned(bin) << shift;
    const unsigned bin_hi = lo_key + ((1u << shift) - 1u);
    hi_key = bin_hi < hi_key ? bin_hi : hi_key;
  }
  // More than need entries hold key lo_key: those of the lowest pages.
  for (int w = tid; w < n_words; w += THREADS) sm.words[w] = 0u;
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (live[k] && key[k] == lo_key) atomicOr(&sm.words[(page[k] - page0) >> 5], 1u << ((page[k] - page0) & 31));
  __syncthreads();
  const int per = (n_words + THREADS - 1) / THREADS, w0 = tid * per;
  int ties = 0;
  for (int w = w0; w < w0 + per && w < n_words; ++w) ties += __popc(sm.words[w]);
  int ties_before, ties_all;
  cub::BlockScan<int, THREADS>(sm.scan).ExclusiveSum(ties, ties_before, ties_all);
  for (int w = w0; w < w0 + per && w < n_words; ++w) {  // each word's first rank
    sm.hist[w] = ties_before;
    ties_before += __popc(sm.words[w]);
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (live[k] && key[k] == lo_key) {
      const int x = page[k] - page0;
      pick[k] = sm.hist[x >> 5] + __popc(sm.words[x >> 5] & ((1u << (x & 31)) - 1u)) < need;
    }
  __syncthreads();
}

// lists: per (query, KV head) and block, n_sel (key, page) pairs, page -1 past the block's
// choice (the call's scratch, so the last block reads them without first reading counts);
// done: per (query, KV head) the count of blocks finished (zero between calls). With kept
// positions the last block marks the chosen pages in marks (as page_top_kernel) for the keep
// kernels instead of writing the row.
template <bool RANGES>
__global__ void __launch_bounds__(kCandThreads) page_cand_kernel(const Common c, const float *scores,
                                                                 unsigned *row_max, float *marks, int64_t n_items,
                                                                 int item, int n_sel, int2 *lists,
                                                                 int *done, int32_t *out, int64_t o_s0, int64_t o_s1,
                                                                 int64_t o_s2, int64_t width) {
  __shared__ ChooseShared<kCandThreads> sm;
  __shared__ bool last_s;
  wait_prior_grid();  // the bounds' scores and maxima; the next kernel is placed by the last block
  const int tid = threadIdx.x, h = blockIdx.y, i = blockIdx.z, n_blocks = int(gridDim.x);
  const int64_t qh = int64_t(i) * c.H + h;
  const float *scores_qh = scores + qh * c.G * n_items;
  unsigned *row_max_qh = row_max + qh * c.G;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);

  // This block's pages, kCandPer consecutive a thread: masses (summed as page_top_kernel's).
  // The scores are loaded before the row maxima are read: two loads in flight, not one
  // after the other.
  const int page0 = int(blockIdx.x) * kCandChunk;
  const int64_t r0 = page0 + int64_t(tid) * kCandPer;
  const bool vec = kCandPer == 4 && (n_items & 3) == 0 && r0 + 3 < n_items;  // aligned: 16-byte loads
  float sc[kMaxGroup][kCandPer];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    const float *sg = scores_qh + int64_t(g) * n_items + r0;
    if (g < c.G && vec) {
      const float4 v = *reinterpret_cast<const float4 *>(sg);
      sc[g][0] = v.x;
      sc[g][1] = v.y;
      sc[g][2] = v.z;
      sc[g][3] = v.w;
    } else {
#pragma unroll
      for (int k = 0; k < kCandPer; ++k) sc[g][k] = g < c.G && r0 + k < n_items ? sg[k] : -INFINITY;
    }
  }
  float m[kCandPer];
#pragma unroll
  for (int k = 0; k < kCandPer; ++k) m[k] = 0.f;
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= c.G) break;
    const float nv = from_order_bits(row_max_qh[g]);
    if (nv == -INFINITY) continue;
#pragma unroll
    for (int k = 0; k < kCandPer; ++k) m[k] += exp2f(sc[g][k] - nv);
  }
  unsigned key[kCandPer];
  int page[kCandPer];
  bool live[kCandPer], pick[kCandPer];
#pragma unroll
  for (int k = 0; k < kCandPer; ++k) {
    key[k] = mass_key(m[k]);
    page[k] = int(r0 + k);
    live[k] = r0 + k < n_items && item_live<RANGES>(c, h, i, r0 + k, item, lo, hi);
  }
  choose_top<kCandThreads, kCandPer>(sm, key, page, live, n_sel, page0, kCandChunk / 32, pick);

  // The block's list, in page order.
  int mine = 0;
#pragma unroll
  for (int k = 0; k < kCandPer; ++k) mine += pick[k];
  int at, listed;
  cub::BlockScan<int, kCandThreads>(sm.scan).ExclusiveSum(mine, at, listed);
  int2 *list = lists + (qh * n_blocks + blockIdx.x) * n_sel;
#pragma unroll
  for (int k = 0; k < kCandPer; ++k)
    if (pick[k]) list[at++] = make_int2(int(key[k]), page[k]);
  for (int e = listed + tid; e < n_sel; e += kCandThreads) list[e] = make_int2(0, -1);
  __threadfence();
  __syncthreads();
  if (tid == 0) last_s = atomicAdd(&done[qh], 1) == n_blocks - 1;
  __syncthreads();
  if (!last_s) return;
  __threadfence();

  // The row's last block: every block has read the row maxima; the state back to zeros.
  if (tid == 0) done[qh] = 0;
  if (tid < c.G) row_max_qh[tid] = 0u;
  const int2 *lists_qh = lists + qh * n_blocks * n_sel;
  unsigned lkey[kCandHeld];
  int lpage[kCandHeld];
  bool llive[kCandHeld], lpick[kCandHeld];
#pragma unroll
  for (int k = 0; k < kCandHeld; ++k) {
    const int e = tid + k * kCandThreads;
    const int2 x = e < n_blocks * n_sel ? __ldcg(&lists_qh[e]) : make_int2(0, -1);
    llive[k] = x.y >= 0;
    lkey[k] = unsigned(x.x);
    lpage[k] = x.y;
  }
  const int n_words = int((n_items + 31) / 32);
  choose_top<kCandThreads, kCandHeld>(sm, lkey, lpage, llive, n_sel, 0, n_words, lpick);
  for (int w = tid; w < n_words; w += kCandThreads) sm.words[w] = 0u;
  __syncthreads();
#pragma unroll
  for (int k = 0; k < kCandHeld; ++k)
    if (lpick[k]) atomicOr(&sm.words[lpage[k] >> 5], 1u << (lpage[k] & 31));
  __syncthreads();
  if (c.pos) {  // kept positions: the chosen pages marked for the keep kernels
    float *marks_qh = marks + qh * n_items;
    for (int64_t r = tid; r < n_items; r += kCandThreads) marks_qh[r] = sm.words[r >> 5] >> (r & 31) & 1u ? 1.f : -1.f;
    return;
  }
  allow_dependents();  // the decode's blocks are placed while this block writes the row
  // The chosen pages in order over the histogram (n_sel <= kSortedCap entries).
  write_page_row<kCandThreads>(c, i, sm.words, n_items, item, lo, hi, sm.hist, sm.scan, out + i * o_s0 + h * o_s1,
                               o_s2, width);
}

// Page bounds on the tensor cores, as the CPU page selector computes them (select/page_code.hpp):
// each page and KV head holds int8 codes [c | r] (2 D) and an f32 scale s and magnitude A; each
// query head of the group is coded as int16 [q | |q|] with its scale t (x = scale * log2e * q
// in f32, as the CPU's queries), and the page's bound (base-2 logit) is
//   t (s (x . [c | r]) + A),
// the integer dot product exact and each f32 step rounded once, so the bounds are the CPU's
// bits. The dot product runs on mma.sync m16n8k32 (s8 x s8, s32 sums): a query code is split
// exactly into two int8 halves, x = 256 hi + lo (hi = (x + 128) >> 8 in [-64, 64], lo in
// [-128, 127]), the B columns are the group's members' hi and lo halves (column 2 m + k), so
// one tile of 16 pages is 2 D / 32 MMAs for groups up to 4 (twice for up to 8), and each lane
// ends with member m's two halves of two pages: dot = 256 d_hi + d_lo (|dot| < 2^31). The sum
// is order-free, so each lane takes 16 contiguous bytes of a row (4 lanes: 64 contiguous) and
// the query's codes are laid out in B in the same order.
// The blocks stay resident (a contiguous run of one row's tiles each) and their warps stream
// their tiles (16 rows of codes, then their 16 (s, A) pairs) through a ring of kPipeStages
// tiles in shared memory (cp.async): a warp keeps kPipeStages - 1 tiles loading while it
// computes one. On an H200 (ncu) at 512K keys: 25 us for the codes' 69 MB, against 38-40 us
// for the bf16 min and max rows before (134 MB); at 128K about 8 us either way, the codes in L2.
constexpr int kPipeWarps = 8, kPipeStages = 4;

// 16 (or 8) bytes global -> shared, asynchronously; zeros when !valid (src is then not read).
__device__ __forceinline__ void copy16_async(void *dst, const void *src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void copy8_async(void *dst, const void *src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// d += a x b over one 16 x 8 x 32 tile of int8 codes, s32 sums (exact).
__device__ __forceinline__ void mma_16832_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A warp's ring stage: 16 rows of 2 D codes, then 16 float2 (scale, magnitude).
constexpr size_t pipe_tile_bytes(int D) { return size_t(32) * D + 16 * sizeof(float2); }
constexpr size_t pipe_warp_bytes(int D) { return size_t(kPipeStages) * pipe_tile_bytes(D); }

// The group's query codes as B columns: column n = 2 m + k holds member m's int8 half k of each
// code (k 0: hi = (x + 128) >> 8, 1: lo = x - 256 hi; exact, x = 256 hi + lo), in word rows of
// 2 D bytes (D / 2 words), kStride words apart. Row n starts at word n * kStride + (n & 3) +
// 16 ((n >> 2) & 1), so that a B load (8 columns, 4 words 4 apart) touches 32 distinct banks;
// kStride leaves room for that shift (a multiple of 32 words, so banks stay as shifted).
template <int D>
struct QueryColumns {
  static constexpr int kStride = D / 2 + 32;
  static constexpr int kWords = 2 * kMaxGroup * kStride;
  __device__ static int at(int n) { return n * kStride + (n & 3) + 16 * ((n >> 2) & 1); }
};

// The group's codes (quantize_query_row's, for x = scale_log2 * q rounded once in f32; members
// past G zero) into the columns and t[g]. x_s: the x values (shared). Every thread of the block
// calls it.
template <int D>
__device__ __forceinline__ void code_queries(const Common &c, const void *q_base, int64_t q_off, uint32_t *cols,
                                             float (&x_s)[kMaxGroup][D], float (&t)[kMaxGroup],
                                             unsigned (&mbits)[kMaxGroup]) {
  if (threadIdx.x < kMaxGroup) mbits[threadIdx.x] = 0;
  __syncthreads();
  for (int e = threadIdx.x; e < kMaxGroup * D; e += blockDim.x) {
    const int g = e / D, d = e % D;
    const float x = g < c.G ? __fmul_rn(c.scale_log2, load_any(q_base, q_off + g * c.q_s1 + d * c.q_s2, c.q_dtype)) : 0.f;
    x_s[g][d] = x;
    const float a = fabsf(x);
    if (a == a) atomicMax(&mbits[g], __float_as_uint(a));  // a NaN is passed over, as by std::max
  }
  __syncthreads();
  if (threadIdx.x < kMaxGroup)
    t[threadIdx.x] = sa::page_code::query_scale(double(__uint_as_float(mbits[threadIdx.x])), 2 * D);
  __syncthreads();
  auto *bytes = reinterpret_cast<int8_t *>(cols);
  for (int e = threadIdx.x; e < kMaxGroup * D; e += blockDim.x) {
    const int g = e / D, d = e % D;
    // |x|'s code is |x's code|: the division and the rounding are both sign-symmetric.
    const int v = sa::page_code::query_code(x_s[g][d], t[g]), a = v < 0 ? -v : v;
    const int vh = (v + 128) >> 8, ah = (a + 128) >> 8;
    bytes[QueryColumns<D>::at(2 * g) * 4 + d] = int8_t(vh);
    bytes[QueryColumns<D>::at(2 * g + 1) * 4 + d] = int8_t(v - 256 * vh);
    bytes[QueryColumns<D>::at(2 * g) * 4 + D + d] = int8_t(ah);
    bytes[QueryColumns<D>::at(2 * g + 1) * 4 + D + d] = int8_t(a - 256 * ah);
  }
  __syncthreads();
}

// One block's run of tiles of query i and list h: rows of codes [n_rows][2 D] and (s, A)
// [n_rows] (the list's), its scores out[g * n_rows + r] and its row maxima row_max[g]
// (order_bits, raised with atomics). Blocks past the row's tiles return at once.
template <int D, bool RANGES, int SETS>
__device__ __forceinline__ void page_bounds_tiles(const Common &c, int i, int h, const void *q_base, int64_t q_off,
                                                  const int8_t *codes, const float2 *scales, int64_t n_rows,
                                                  int item, int64_t tiles_per_block, float *out, unsigned *row_max) {
  constexpr int RC = 2 * D / 16;  // 16-byte chunks of a row
  constexpr int CH = RC / 4;      // chunks a lane reads of each of its two rows (chunk tq + 4 j)
  constexpr int TILE = int(pipe_tile_bytes(D));
  // A row's chunk col is stored at col ^ 4 (row & 1): the fragment reads (8 rows, 4 chunks a
  // row, 8 lanes a shared-memory wavefront) then fall on distinct banks.
  extern __shared__ __align__(16) unsigned char ring_s[];  // [warps][kPipeStages][TILE]
  __shared__ uint32_t q_s[QueryColumns<D>::kWords];
  __shared__ float x_s[kMaxGroup][D];
  __shared__ float t_s[kMaxGroup];
  __shared__ unsigned m_s[kMaxGroup];
  __shared__ float max_s[kPipeWarps][kMaxGroup];
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tq = lane & 3;
  const int64_t n_tiles = (n_rows + 15) / 16, t_begin = int64_t(blockIdx.x) * tiles_per_block;
  if (t_begin >= n_tiles) return;  // the whole block: a shorter sequence of a batch
  const int64_t t_end = t_begin + tiles_per_block < n_tiles ? t_begin + tiles_per_block : n_tiles;
  const int my_tiles = t_end > t_begin + warp ? int((t_end - t_begin - warp + warps - 1) / warps) : 0;
  unsigned char *ring = ring_s + warp * kPipeStages * TILE;
  auto issue = [&](int k) {  // tile k of the warp into stage k % kPipeStages; a group even when none is left
    if (k < my_tiles) {
      const int64_t p = (t_begin + warp + int64_t(k) * warps) * 16;
      unsigned char *st = ring + (k % kPipeStages) * TILE;
#pragma unroll
      for (int x = lane; x < 16 * RC; x += 32) {
        const int row = x / RC, col = x % RC;
        const bool valid = p + row < n_rows;
        copy16_async(st + row * 2 * D + ((col ^ ((row & 1) << 2)) * 16),
                     codes + (valid ? (p + row) * 2 * D : 0) + col * 16, valid);
      }
      if (lane < 16) {
        const bool valid = p + lane < n_rows;
        copy8_async(st + 32 * D + lane * sizeof(float2), scales + (valid ? p + lane : 0), valid);
      }
    }
    commit_async();
  };
#pragma unroll
  for (int k = 0; k < kPipeStages - 1; ++k) issue(k);
  code_queries<D>(c, q_base, q_off, q_s, x_s, t_s, m_s);
  // B of chunk j (chunk tq + 4 j), word w: column gid of the set (member gid / 2 + 4 set, half
  // gid & 1) at the codes of bytes 16 chunk + 4 w .. + 3.
  uint32_t bq[SETS][CH][4];
#pragma unroll
  for (int set = 0; set < SETS; ++set)
#pragma unroll
    for (int j = 0; j < CH; ++j)
#pragma unroll
      for (int w = 0; w < 4; ++w) bq[set][j][w] = q_s[QueryColumns<D>::at(8 * set + gid) + (tq + 4 * j) * 4 + w];
  float qt[SETS];
#pragma unroll
  for (int set = 0; set < SETS; ++set) qt[set] = t_s[4 * set + tq];
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  float best[SETS];
#pragma unroll
  for (int set = 0; set < SETS; ++set) best[set] = -INFINITY;
  for (int k = 0; k < my_tiles; ++k) {
    issue(k + kPipeStages - 1);
    wait_async<kPipeStages - 1>();  // tile k's copies of this lane have landed
    __syncwarp();                   // and every lane's
    const unsigned char *st = ring + (k % kPipeStages) * TILE;
    const int64_t p0 = (t_begin + warp + int64_t(k) * warps) * 16 + gid, p1 = p0 + 8;
    int d[SETS][4] = {}, e[SETS][4] = {};  // two chains of MMAs, not one; summed exactly
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int at = ((tq + 4 * j) ^ ((gid & 1) << 2)) * 16;
      const uint4 a0 = *reinterpret_cast<const uint4 *>(st + gid * 2 * D + at);
      const uint4 a1 = *reinterpret_cast<const uint4 *>(st + (gid + 8) * 2 * D + at);
#pragma unroll
      for (int set = 0; set < SETS; ++set) {
        mma_16832_s8(d[set], a0.x, a1.x, a0.y, a1.y, bq[set][j][0], bq[set][j][1]);
        mma_16832_s8(e[set], a0.z, a1.z, a0.w, a1.w, bq[set][j][2], bq[set][j][3]);
      }
    }
#pragma unroll
    for (int set = 0; set < SETS; ++set)
#pragma unroll
      for (int x = 0; x < 4; ++x) d[set][x] += e[set][x];
    const float2 sa0 = *reinterpret_cast<const float2 *>(st + 32 * D + gid * sizeof(float2));
    const float2 sa1 = *reinterpret_cast<const float2 *>(st + 32 * D + (gid + 8) * sizeof(float2));
    const bool live0 = p0 < n_rows && item_live<RANGES>(c, h, i, p0, item, lo, hi);
    const bool live1 = p1 < n_rows && item_live<RANGES>(c, h, i, p1, item, lo, hi);
#pragma unroll
    for (int set = 0; set < SETS; ++set) {
      const int g = 4 * set + tq;
      const float b0 = sa::page_code::page_bound(int64_t(d[set][0] * 256 + d[set][1]), sa0.x, sa0.y, qt[set]);
      const float b1 = sa::page_code::page_bound(int64_t(d[set][2] * 256 + d[set][3]), sa1.x, sa1.y, qt[set]);
      const float sc0 = live0 ? b0 : -INFINITY, sc1 = live1 ? b1 : -INFINITY;
      if (g < c.G) {
        if (p0 < n_rows) out[int64_t(g) * n_rows + p0] = sc0;
        if (p1 < n_rows) out[int64_t(g) * n_rows + p1] = sc1;
        best[set] = fmaxf(best[set], fmaxf(sc0, sc1));
      }
    }
    __syncwarp();  // the stage is read before the next issue loads it again
  }
  wait_async<0>();
#pragma unroll
  for (int set = 0; set < SETS; ++set)
#pragma unroll
    for (int o = 4; o < 32; o *= 2) best[set] = fmaxf(best[set], __shfl_xor_sync(0xffffffffu, best[set], o));
  if (lane < 4)
#pragma unroll
    for (int set = 0; set < SETS; ++set) max_s[warp][4 * set + lane] = best[set];
  __syncthreads();
  if (threadIdx.x < c.G && threadIdx.x < 4 * SETS) {
    float mx = -INFINITY;
    for (int w = 0; w < warps; ++w) mx = fmaxf(mx, max_s[w][threadIdx.x]);
    if (mx != -INFINITY) atomicMax(&row_max[threadIdx.x], order_bits(mx));
  }
}

// One query's pages: grid (run of tiles, list, query).
template <int D, bool RANGES, int SETS>
__global__ void __launch_bounds__(kPipeWarps * 32, 1)
    page_bounds_kernel(const Common c, const int8_t *codes, const float2 *scales, int64_t head_stride,
                       int64_t n_rows, int item, int64_t tiles_per_block, float *scores, unsigned *row_max) {
  wait_prior_grid();   // the stream's kernel before (the queries)
  allow_dependents();  // the candidates' blocks are placed beside these, and wait
  const int i = blockIdx.z, h = blockIdx.y;
  page_bounds_tiles<D, RANGES, SETS>(c, i, h, c.q, i * c.q_s0 + int64_t(h) * c.G * c.q_s1,
                                     codes + int64_t(h) * head_stride * 2 * D, scales + int64_t(h) * head_stride,
                                     n_rows, item, tiles_per_block, scores + (int64_t(i) * c.H + h) * c.G * n_rows,
                                     row_max + (int64_t(i) * c.H + h) * c.G);
}

// sa_select_batch: grid (run of tiles, KV head, sequence); sequence b of the chunk is query b.
template <int D, int SETS>
__global__ void __launch_bounds__(kPipeWarps * 32, 1)
    batch_bounds_kernel(const Common c, const BatchTable t, int item, int64_t tiles_per_block, float *scores,
                        unsigned *row_max) {
  const int b = blockIdx.z, h = blockIdx.y;
  const BatchSeq &e = t.s[b];
  const int64_t n_rows = (e.n + item - 1) / item;
  page_bounds_tiles<D, false, SETS>(sequence_common(c, e, b), b, h, c.q, b * c.q_s0 + int64_t(h) * c.G * c.q_s1,
                                    e.codes + int64_t(h) * e.head_stride * 2 * D, e.scales + int64_t(h) * e.head_stride,
                                    n_rows, item, tiles_per_block, scores + e.scores_off + int64_t(h) * c.G * n_rows,
                                    row_max + (int64_t(b) * c.H + h) * c.G);
}

// Warps of a bounds block (at most max_warps, fewer where shared memory is smaller) and its
// dynamic shared memory; opts the kernel in once per device.
template <int D, class K>
int bounds_warps(K kernel, int max_warps, int device, size_t *bytes, PerDevice &opted) {
  // The kernel's own shared memory: the query's columns and x values, and small arrays.
  constexpr int kStatic = int(QueryColumns<D>::kWords * 4 + kMaxGroup * D * sizeof(float)) + 1024;
  int warps = (max_shared_per_block(device) - kStatic) / int(pipe_warp_bytes(D));
  warps = warps < 1 ? 1 : warps > max_warps ? max_warps : warps;
  *bytes = size_t(warps) * pipe_warp_bytes(D);
  opt_in_shared(kernel, opted, device, int(*bytes));
  return warps;
}

// The page bounds of one selection by resident blocks: one block a multiprocessor, the rows'
// tiles shared evenly among the blocks of each (query, KV head).
template <int D, bool RANGES, int SETS>
void launch_bounds_d(const Common &c, const int8_t *codes, const float2 *scales, int64_t head_stride, int64_t n_rows,
                     int item, float *scores, unsigned *row_max, int device, cudaStream_t s) {
  static PerDevice opted;
  size_t bytes = 0;
  const int warps = bounds_warps<D>(page_bounds_kernel<D, RANGES, SETS>, kPipeWarps, device, &bytes, opted);
  const int64_t n_tiles = (n_rows + 15) / 16, rows = int64_t(c.H) * c.n_q;
  int64_t blocks = sm_count(device) / rows;
  blocks = blocks < 1 ? 1 : blocks > n_tiles ? n_tiles : blocks;
  const int64_t per_block = (n_tiles + blocks - 1) / blocks;
  blocks = (n_tiles + per_block - 1) / per_block;
  launch_dependent(page_bounds_kernel<D, RANGES, SETS>, dim3(unsigned(blocks), c.H, c.n_q), dim3(warps * 32), bytes, s,
                   device, "page bounds launch", c, codes, scales, head_stride, n_rows, item, per_block, scores, row_max);
}

template <int D>
void launch_bounds_g(const Common &c, const int8_t *codes, const float2 *scales, int64_t head_stride, int64_t n_rows,
                     int item, float *scores, unsigned *row_max, int device, cudaStream_t s) {
  const bool ranges = c.min_pos != nullptr, wide = c.G > 4;
  if (ranges && wide) launch_bounds_d<D, true, 2>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
  else if (ranges) launch_bounds_d<D, true, 1>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
  else if (wide) launch_bounds_d<D, false, 2>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
  else launch_bounds_d<D, false, 1>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
}

void launch_bounds(const Common &c, const int8_t *codes, const float2 *scales, int64_t head_stride, int64_t n_rows,
                   int item, float *scores, unsigned *row_max, int device, cudaStream_t s) {
  if (c.D == 64) launch_bounds_g<64>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
  else if (c.D == 128) launch_bounds_g<128>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
  else launch_bounds_g<256>(c, codes, scales, head_stride, n_rows, item, scores, row_max, device, s);
}

// A batch chunk's bounds: runs of kBatchTileWarps warps x 8 tiles (1024 pages at 8 warps), so
// that short sequences make few blocks and long ones enough to fill the device.
constexpr int kBatchWarps = 4;
template <int D, int SETS>
void launch_batch_bounds_d(const Common &c, const BatchTable &t, int count, int64_t max_rows, int item, float *scores,
                           unsigned *row_max, int device, cudaStream_t s) {
  static PerDevice opted;
  size_t bytes = 0;
  const int warps = bounds_warps<D>(batch_bounds_kernel<D, SETS>, kBatchWarps, device, &bytes, opted);
  const int64_t per_block = int64_t(warps) * 8, n_tiles = (max_rows + 15) / 16;
  const dim3 grid(unsigned((n_tiles + per_block - 1) / per_block), c.H, unsigned(count));
  batch_bounds_kernel<D, SETS><<<grid, warps * 32, bytes, s>>>(c, t, item, per_block, scores, row_max);
  check_cuda(cudaGetLastError(), "batch selection bounds launch");
}
void launch_batch_bounds(const Common &c, const BatchTable &t, int count, int64_t max_rows, int item, float *scores,
                         unsigned *row_max, int device, cudaStream_t s) {
  const bool wide = c.G > 4;
  if (c.D == 64) wide ? launch_batch_bounds_d<64, 2>(c, t, count, max_rows, item, scores, row_max, device, s)
                      : launch_batch_bounds_d<64, 1>(c, t, count, max_rows, item, scores, row_max, device, s);
  else if (c.D == 128) wide ? launch_batch_bounds_d<128, 2>(c, t, count, max_rows, item, scores, row_max, device, s)
                            : launch_batch_bounds_d<128, 1>(c, t, count, max_rows, item, scores, row_max, device, s);
  else wide ? launch_batch_bounds_d<256, 2>(c, t, count, max_rows, item, scores, row_max, device, s)
            : launch_batch_bounds_d<256, 1>(c, t, count, max_rows, item, scores, row_max, device, s);
}

// sa_select_batch over a paged cache: each chosen slot j of the sequence becomes the physical
// slot its page table row gives (-1 where the page is out of range: never read through).
__global__ void to_physical_kernel(int32_t *o, int64_t s0, int64_t s1, int64_t s2, int rows_per_q, int64_t width,
                                   const int32_t *table, int64_t t_s0, int64_t t_s, int64_t page_size,
                                   int64_t num_pages) {
  const int64_t n = rows_per_q * width;  // entries of one query (blockIdx.y)
  table += blockIdx.y * t_s0;            // its page table row
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / width, c = e % width;
    int32_t &x = o[blockIdx.y * s0 + r * s1 + c * s2];
    if (x < 0) continue;
    const int64_t page = table[(x / page_size) * t_s];
    x = page >= 0 && page < num_pages ? int32_t(page * page_size + x % page_size) : -1;
  }
}

constexpr size_t kStaticTop = 32 * 1024;  // the top kernel's own shared memory (about 25 KB), rounded up

// Opts kernel into the most dynamic shared memory when the staged arrays pass 48 KB.
template <class K>
void allow_staged_shared(K kernel, PerDevice &opted, int device, size_t staged_bytes) {
  if (staged_bytes + kStaticTop <= 48 * 1024) return;
  opt_in_shared(kernel, opted, device, max_shared_per_block(device) - int(kStaticTop));
}

// What every query of a call shares: the queries' layout, heads and options.
Common query_common(const sa_tensor &q, int H, int G, int D, int sinks, int window, float scale) {
  Common c{};
  c.q_s0 = q.strides[0];
  c.q_s1 = q.strides[1];
  c.q_s2 = q.strides[2];
  c.q_dtype = q.dtype;
  c.H = H;
  c.G = G;
  c.kv_group = 1;
  c.D = D;
  c.sinks = sinks;
  c.window = window;
  c.scale_log2 = scale * kLog2e;
  return c;
}

// Appends were queued on the index's stream; the last one recorded ix.appended there. The
// selection waits for that event from its own stream, and enqueues nothing on the index's
// stream: work there, or an event recorded there, during a capture of `stream` would break the
// capture (a legacy-stream record against a capturing blocking stream is refused outright).
// While `stream` is being captured the wait becomes an external-event node, since a plain wait
// on an event recorded outside the capture invalidates it: each replay of the graph then
// waits for the appends recorded before that replay.
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

// The keys an exact selection reads: the index's copy, or the host's K it borrows.
struct ExactKeys {
  const uint16_t *data;
  int64_t head_stride, row_stride;  // elements
  sa_dtype dtype;
};
ExactKeys exact_keys(const sa_plugin_index &ix, const sa_tensor *keys) {
  if (!ix.borrow) return ExactKeys{static_cast<const uint16_t *>(ix.keys), ix.capacity * ix.dim, ix.dim, ix.dtype};
  if (!keys) fail(SA_ERR_NULL_POINTER, "the index borrows its keys, but the selection passed none (opt->keys)");
  if (!is_half_type(keys->dtype))
    fail(SA_ERR_UNSUPPORTED, "opt->keys is f32; CUDA selection reads borrowed keys as f16 or bf16");
  if (keys->strides[2] != 1)
    fail(SA_ERR_UNSUPPORTED, "opt->keys.strides[2] is %lld; CUDA selection reads each key's head_dim contiguous "
         "(stride 1)", (long long)keys->strides[2]);
  if (reinterpret_cast<uintptr_t>(keys->data) % 16 || keys->strides[0] % 8 || keys->strides[1] % 8)
    fail(SA_ERR_UNSUPPORTED, "opt->keys: CUDA selection reads key rows in 16-byte pieces, so the data pointer must be "
         "16-byte aligned and strides[0], strides[1] multiples of 8 elements (got %lld, %lld)",
         (long long)keys->strides[0], (long long)keys->strides[1]);
  return ExactKeys{static_cast<const uint16_t *>(keys->data), keys->strides[1], keys->strides[0], keys->dtype};
}

template <class T, int D, int MAXG>
void launch_key_scores_g(const Common &c, const ExactKeys &k, int64_t n_rows, int blocks, float *scores,
                         float2 *partial, cudaStream_t s) {
  const dim3 grid(unsigned(blocks) * unsigned(c.H), c.n_q);
  key_scores_kernel<T, D, MAXG><<<grid, kThreads, 0, s>>>(c, k.data, k.head_stride, k.row_stride, n_rows, scores,
                                                          partial);
}
template <class T, int D>
void launch_key_scores(const Common &c, const ExactKeys &k, int64_t n_rows, int blocks, float *scores,
                       float2 *partial, cudaStream_t s) {
  if (c.G == 1) launch_key_scores_g<T, D, 1>(c, k, n_rows, blocks, scores, partial, s);
  else if (c.G == 2) launch_key_scores_g<T, D, 2>(c, k, n_rows, blocks, scores, partial, s);
  else if (c.G <= 4) launch_key_scores_g<T, D, 4>(c, k, n_rows, blocks, scores, partial, s);
  else launch_key_scores_g<T, D, kMaxGroup>(c, k, n_rows, blocks, scores, partial, s);
}

// Exact scores and their rows' log-sum-exps (norm); key_scores_blocks: the blocks of a list.
int key_scores_blocks(const Common &c, int64_t n_rows) {
  const int64_t per_block = int64_t(kThreads / (c.D / 8)) * kExactSteps;
  const int64_t blocks = (n_rows + per_block - 1) / per_block;
  if (blocks * c.H > int64_t(INT32_MAX))
    fail(SA_ERR_UNSUPPORTED, "%lld slots x %d lists in one CUDA exact selection (at most %lld blocks)",
         (long long)n_rows, c.H, (long long)INT32_MAX);
  return int(blocks);
}
void launch_exact_scores(const Common &c, const ExactKeys &k, int64_t n_rows, float *scores, float2 *partial,
                         float *norm, cudaStream_t s) {
  const int blocks = key_scores_blocks(c, n_rows);
  const bool f16 = k.dtype == SA_DTYPE_F16;
  if (c.D == 64) f16 ? launch_key_scores<F16, 64>(c, k, n_rows, blocks, scores, partial, s)
                     : launch_key_scores<BF16, 64>(c, k, n_rows, blocks, scores, partial, s);
  else if (c.D == 128) f16 ? launch_key_scores<F16, 128>(c, k, n_rows, blocks, scores, partial, s)
                           : launch_key_scores<BF16, 128>(c, k, n_rows, blocks, scores, partial, s);
  else f16 ? launch_key_scores<F16, 256>(c, k, n_rows, blocks, scores, partial, s)
           : launch_key_scores<BF16, 256>(c, k, n_rows, blocks, scores, partial, s);
  check_cuda(cudaGetLastError(), "selection scores launch");
  partial_lse_kernel<<<unsigned(int64_t(c.n_q) * c.H * c.G), kLseThreads, 0, s>>>(partial, blocks, norm);
  check_cuda(cudaGetLastError(), "selection norm launch");
}

void index_select(const sa_plugin_index &ix, const sa_plugin_select_args &a, bool with_keys) {
  const sa_tensor &q = *a.queries, &out = *a.indices;
  const bool page = ix.kind == SA_SELECTOR_PAGE;
  // select_keys is called with the fields it reads; a shorter struct is the caller's bug.
  if (with_keys && a.struct_size < offsetof(sa_plugin_select_args, per_query_head) + sizeof a.per_query_head)
    fail(SA_ERR_STRUCT_SIZE, "select_keys: sa_plugin_select_args without keys and per_query_head");
  const bool per_head = with_keys && a.per_query_head;
  if (per_head && page) fail(SA_ERR_UNSUPPORTED, "per_query_head: the CUDA page selector makes one list per KV head");
  const sa_tensor *borrowed = with_keys ? a.keys : nullptr;
  // Lists: one per KV head of G queries, or one per query head (G 1, kv_group of them a KV head).
  const int n_q = int(q.shape[0]), kv_group = per_head ? int(q.shape[1] / ix.heads) : 1;
  const int H = per_head ? int(q.shape[1]) : ix.heads, G = per_head ? 1 : int(q.shape[1] / H);
  if (G > kMaxGroup) fail(SA_ERR_UNSUPPORTED, "%d query heads per KV head; CUDA selection takes at most %d", G, kMaxGroup);
  if (n_q > 65535) fail(SA_ERR_UNSUPPORTED, "%d queries in one CUDA selection (at most 65535)", n_q);
  if (H > 65535) fail(SA_ERR_UNSUPPORTED, "%d lists per query in one CUDA selection (at most 65535)", H);
  const ExactKeys exact = page ? ExactKeys{} : exact_keys(ix, borrowed);
  DeviceGuard guard(ix.device);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  if (ix.stream != stream && ix.size > 0) order_after_appends(ix, stream);
  Common c = query_common(q, H, G, ix.dim, a.sinks, a.window, a.scale);
  c.kv_group = kv_group;
  c.q = q.data;
  c.n_q = n_q;
  c.n = ix.size;
  c.first_pos = a.first_query_position;
  c.pos = ix.positions;
  c.pos_stride = ix.position_rows > 1 ? ix.capacity : 0;
  c.min_pos = ix.page_min_pos;
  c.max_pos = ix.page_max_pos;
  c.range_stride = ix.position_rows > 1 ? ix.capacity / ix.page : 0;

  const int item = page ? ix.page : 1;
  const int64_t n_items = (ix.size + item - 1) / item;
  const int64_t n_sel = page ? (a.top_k / item > 0 ? a.top_k / item : 1) : a.top_k;
  const size_t rows = size_t(n_q) * H * G;
  const size_t staged_bytes = size_t(n_items) * sizeof(float) + size_t(out.shape[2]) * sizeof(int32_t);
  // Spread: masses and counts over many blocks, the row written by its last (page_top_kernel).
  const bool spread = page && n_items > 0 && n_items <= int64_t(kMaskWords) * 32 && n_sel <= kSortedCap;
  // Candidates: each block's best n_sel, chosen among by the row's last block (page_cand_kernel).
  const int64_t cand_blocks = (n_items + kCandChunk - 1) / kCandChunk;
  const bool cand = spread && cand_blocks * n_sel <= kCandCap;
  // Staged: the masses and the output row in shared memory.
  const bool staged =
      page && !c.pos && !spread && staged_bytes + kStaticTop <= size_t(max_shared_per_block(ix.device));
  const size_t scores_bytes = rows * size_t(n_items) * sizeof(float);
  const size_t norm_bytes = rows * sizeof(float);
  const size_t mass_bytes = staged ? 0 : size_t(n_q) * H * size_t(n_items) * sizeof(float);
  // Long rows of global masses: the threshold from radix passes over many blocks; exact rows
  // are then written over many blocks too (chosen_count_kernel, chosen_write_kernel).
  const bool passes = !staged && !spread && n_items >= kManyItems;
  const bool chosen = passes && !page;
  const int64_t chunks = (ix.size + kKeepSlots - 1) / kKeepSlots + (ix.size == 0);
  const size_t row_max_bytes = (rows * sizeof(unsigned) + 15) / 16 * 16;
  const size_t sel_bytes = passes ? size_t(n_q) * H * kSelStride * sizeof(int)
                           : cand   ? size_t(n_q) * H * sizeof(int)
                           : spread ? size_t(n_q) * H * kPageState * sizeof(int)
                                    : 0;
  const void *owner = a.struct_size >= offsetof(sa_plugin_select_args, owner) + sizeof a.owner ? a.owner : nullptr;
  const int64_t keep_chunks = c.pos && !chosen ? chunks : 0;
  const size_t counts_bytes = chosen ? size_t(n_q) * H * size_t(2 + 2 * chunks) * sizeof(int)
                                     : size_t(n_q) * H * size_t(keep_chunks) * sizeof(int);
  // The exact scores' per-block partials (key_scores_kernel) or the page blocks' candidate
  // lists (page_cand_kernel), 16-byte aligned after the rest.
  const size_t partial_at = (scores_bytes + norm_bytes + mass_bytes + counts_bytes + 15) / 16 * 16;
  const size_t partial_bytes = page ? 0 : rows * size_t(key_scores_blocks(c, n_items)) * sizeof(float2);
  const size_t lists_bytes = cand ? size_t(n_q) * H * size_t(cand_blocks) * size_t(n_sel) * sizeof(int2) : 0;
  const StreamBuffers b = stream_buffers(owner, ix.device, stream, row_max_bytes + sel_bytes,
                                         partial_at + partial_bytes + lists_bytes);
  auto *scores = static_cast<float *>(b.scratch);
  auto *norm = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + scores_bytes);
  auto *mass = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + scores_bytes + norm_bytes);
  auto *counts = reinterpret_cast<int *>(static_cast<char *>(b.scratch) + scores_bytes + norm_bytes + mass_bytes);
  auto *partial = reinterpret_cast<float2 *>(static_cast<char *>(b.scratch) + partial_at);
  auto *lists = reinterpret_cast<int2 *>(static_cast<char *>(b.scratch) + partial_at + partial_bytes);
  auto *row_max = static_cast<unsigned *>(b.zeroed);  // the scores' row maxima
  int *sel = passes || spread ? reinterpret_cast<int *>(static_cast<char *>(b.zeroed) + row_max_bytes) : nullptr;
  const int64_t head_stride = ix.capacity / ix.page;
  if (n_items > 0) {
    if (!page)
      launch_exact_scores(c, exact, n_items, scores, partial, norm, stream);
    else
      launch_bounds(c, ix.page_codes, ix.page_scales, head_stride, n_items, item, scores, row_max, ix.device, stream);
    if (!staged && !spread && !chosen) {  // chosen: the first radix pass makes the masses
      const unsigned mb = unsigned((n_items + 255) / 256 < 1024 ? (n_items + 255) / 256 : 1024);
      mass_kernel<<<dim3(mb, H, n_q), 256, 0, stream>>>(c, scores, norm, page ? row_max : nullptr, n_items, item, !page,
                                                         mass);
      check_cuda(cudaGetLastError(), "selection mass launch");
    }
    if (passes) {
      const int64_t share = (n_items + kPassItems - 1) / kPassItems;
      const dim3 grid(unsigned(int64_t(n_q) * H), unsigned(share < 1024 ? share : 1024));
      for (int p = 0; p < kDigits; ++p)
        radix_pass_kernel<<<grid, kPassThreads, 0, stream>>>(c, chosen ? scores : nullptr, norm, mass, n_items, n_sel,
                                                             p, sel);
      check_cuda(cudaGetLastError(), "selection radix launch");
    }
  }
  int32_t *o = static_cast<int32_t *>(out.data);
  if (chosen) {
    const dim3 grid(unsigned(chunks), H, n_q);
    chosen_count_kernel<<<grid, kKeepThreads, 0, stream>>>(c, mass, n_items, sel, counts);
    chosen_write_kernel<<<grid, kKeepThreads, 0, stream>>>(c, mass, n_items, sel, counts, o, out.strides[0],
                                                           out.strides[1], out.strides[2], out.shape[2]);
  } else if (cand) {
    const auto top = c.min_pos ? page_cand_kernel<true> : page_cand_kernel<false>;
    launch_dependent(top, dim3(unsigned(cand_blocks), H, n_q), dim3(kCandThreads), 0, stream, ix.device,
                     "page candidates launch", c, scores, row_max, mass, n_items, item, int(n_sel), lists, sel, o,
                     out.strides[0], out.strides[1], out.strides[2], out.shape[2]);
  } else if (spread) {
    // The row's masses also in shared memory when they fit beside the kernel's own arrays.
    const int most = max_shared_per_block(ix.device) - int(kPageStatic);
    const bool staged_row = kPageArea + size_t(n_items) * sizeof(float) <= size_t(most);
    const size_t dyn = kPageArea + (staged_row ? size_t(n_items) * sizeof(float) : 0);
    static PerDevice opted[2];
    opt_in_shared(page_top_kernel<false>, opted[0], ix.device, most);
    opt_in_shared(page_top_kernel<true>, opted[1], ix.device, most);
    const auto top = c.min_pos ? page_top_kernel<true> : page_top_kernel<false>;
    top<<<dim3(unsigned((n_items + kPageChunk - 1) / kPageChunk), H, n_q), kTopThreads, dyn, stream>>>(
        c, scores, row_max, mass, n_items, item, n_sel, o, out.strides[0], out.strides[1], out.strides[2], out.shape[2],
        sel, staged_row);
  } else if (staged) {
    static PerDevice opted;
    allow_staged_shared(top_items_kernel<true>, opted, ix.device, staged_bytes);
    top_items_kernel<true><<<dim3(H, n_q), kTopThreads, staged_bytes, stream>>>(
        c, mass, scores, row_max, n_items, item, n_sel, o, out.strides[0], out.strides[1], out.strides[2], out.shape[2],
        nullptr);
  } else {
    top_items_kernel<false><<<dim3(H, n_q), kTopThreads, 0, stream>>>(c, mass, scores, page ? row_max : nullptr, n_items,
                                                                     item, n_sel, o, out.strides[0], out.strides[1],
                                                                     out.strides[2], out.shape[2], sel);
  }
  check_cuda(cudaGetLastError(), "top-k launch");
  if (keep_chunks) {  // the rows from the marked items
    const dim3 grid(unsigned(keep_chunks), H, n_q);
    keep_count_kernel<<<grid, kKeepThreads, 0, stream>>>(c, mass, n_items, item, counts);
    keep_write_kernel<<<grid, kKeepThreads, 0, stream>>>(c, mass, n_items, item, counts, o, out.strides[0],
                                                         out.strides[1], out.strides[2], out.shape[2]);
    check_cuda(cudaGetLastError(), "kept slots launch");
  }
  const bool paged = a.struct_size >= offsetof(sa_plugin_select_args, num_pages) + sizeof a.num_pages && a.page_table;
  if (paged && out.shape[2] > 0) {
    const int64_t per_q = out.shape[1] * out.shape[2];
    const unsigned blocks = unsigned((per_q + 255) / 256 < 64 ? (per_q + 255) / 256 : 64);
    to_physical_kernel<<<dim3(blocks, n_q), 256, 0, stream>>>(o, out.strides[0], out.strides[1], out.strides[2],
                                                             int(out.shape[1]), out.shape[2], a.page_table, 0,
                                                             a.page_table_stride, a.page_size, a.num_pages);
    check_cuda(cudaGetLastError(), "physical slot launch");
  }
}

// Page indexes, one query per sequence: per chunk of kBatchChunk sequences the bounds of every
// sequence's pages in one launch, the staged top-k in one, the page tables in one. What it does
// not serve (exact indexes, differing heads / dims / page sizes / dtypes / devices, groups
// beyond kMaxGroup, a longest sequence whose masses do not fit in shared memory) returns false
// before anything is queued: the caller selects per sequence then.
bool index_select_batch(const sa_plugin_select_batch_args &a) {
  const int64_t n_seqs = a.n_seqs;
  if (n_seqs < 1) return false;
  const sa_plugin_index &first = *a.indexes[0];
  const sa_tensor &q = *a.queries, &out = *a.indices;
  const int H = first.heads, G = int(q.shape[1] / H), item = first.page;
  if (first.kind != SA_SELECTOR_PAGE || G > kMaxGroup) return false;
  int64_t max_items = 0, total_items = 0;
  for (int64_t b = 0; b < n_seqs; ++b) {
    const sa_plugin_index &ix = *a.indexes[b];
    if (ix.kind != SA_SELECTOR_PAGE || ix.heads != H || ix.dim != first.dim || ix.page != item ||
        ix.dtype != first.dtype || ix.device != first.device || ix.positions)
      return false;
    const int64_t items = (ix.size + item - 1) / item;
    max_items = items > max_items ? items : max_items;
    total_items += items;
  }
  const size_t staged_bytes = size_t(max_items) * sizeof(float) + size_t(out.shape[2]) * sizeof(int32_t);
  if (staged_bytes + kStaticTop > size_t(max_shared_per_block(first.device))) return false;
  if (n_seqs * H * G > int64_t(INT32_MAX)) return false;

  DeviceGuard guard(first.device);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  for (int64_t b = 0; b < n_seqs; ++b)
    if (a.indexes[b]->stream != stream && a.indexes[b]->size > 0) order_after_appends(*a.indexes[b], stream);
  const StreamBuffers buf = stream_buffers(a.owner, first.device, stream, size_t(n_seqs) * H * G * sizeof(unsigned),
                                           size_t(total_items) * H * G * sizeof(float));
  Common c = query_common(q, H, G, first.dim, a.sinks, a.window, a.scale);  // q, n, positions per chunk
  const int64_t n_sel = a.top_k / item > 0 ? a.top_k / item : 1;
  const size_t q_elem = q.dtype == SA_DTYPE_F32 ? 4 : 2;
  static PerDevice opted;
  allow_staged_shared(batch_top_kernel, opted, first.device, staged_bytes);
  int64_t scores_before = 0;
  for (int64_t c0 = 0; c0 < n_seqs; c0 += kBatchChunk) {
    const int count = int(n_seqs - c0 < kBatchChunk ? n_seqs - c0 : kBatchChunk);
    BatchTable t{};
    int64_t chunk_items = 0, chunk_max = 0;
    for (int b = 0; b < count; ++b) {
      const sa_plugin_index &ix = *a.indexes[c0 + b];
      const int64_t items = (ix.size + item - 1) / item;
      t.s[b] = BatchSeq{ix.page_codes, ix.page_scales, ix.capacity / item, ix.size, a.query_positions[c0 + b],
                        chunk_items * H * G};
      chunk_items += items;
      chunk_max = items > chunk_max ? items : chunk_max;
    }
    c.q = static_cast<const char *>(q.data) + c0 * q.strides[0] * int64_t(q_elem);
    c.n_q = count;
    float *scores = static_cast<float *>(buf.scratch) + scores_before * H * G;
    unsigned *row_max = static_cast<unsigned *>(buf.zeroed) + c0 * H * G;
    int32_t *o = static_cast<int32_t *>(out.data) + c0 * out.strides[0];
    if (chunk_max > 0) launch_batch_bounds(c, t, count, chunk_max, item, scores, row_max, first.device, stream);
    batch_top_kernel<<<dim3(H, count), kTopThreads, staged_bytes, stream>>>(
        c, t, scores, row_max, item, n_sel, o, out.strides[0], out.strides[1], out.strides[2], out.shape[2]);
    check_cuda(cudaGetLastError(), "batch top-k launch");
    if (a.page_table && out.shape[2] > 0) {
      const int64_t per_q = out.shape[1] * out.shape[2];
      const unsigned blocks = unsigned((per_q + 255) / 256 < 64 ? (per_q + 255) / 256 : 64);
      to_physical_kernel<<<dim3(blocks, count), 256, 0, stream>>>(
          o, out.strides[0], out.strides[1], out.strides[2], int(out.shape[1]), out.shape[2],
          a.page_table + c0 * a.page_table_row_stride, a.page_table_row_stride, a.page_table_stride, a.page_size,
          a.num_pages);
      check_cuda(cudaGetLastError(), "batch physical slot launch");
    }
    scores_before += chunk_items;
  }
  return true;
}

}  // namespace sacuda
