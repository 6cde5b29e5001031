// Selection on a device index. Every selector ends the same way: a per-item estimated mass
// (an item is a slot for exact, a page for page; -1 marks items with no candidate slot), a
// radix select of the best items in one block per (query, KV head), and an ordered pass that
// writes sinks, the chosen items' slots and the window, ascending, then -1 padding.
//   exact: mass of slot j = mean over the group's heads of softmax(scale * q.k)_j (as the CPU).
//   page:  bound_g(p) = sum_d max(q_d min_d, q_d max_d) (Quest); mass of page p =
//          sum_g 2^(scale*log2e*(bound_g(p) - max_p' bound_g(p'))); top_k / page_size pages.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "device_index.hpp"
#include "half_vec.cuh"
#include "plugin_state.hpp"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;
constexpr int kTopThreads = 1024;

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
};

// Candidate slots of query i: [lo, hi], visible and neither sink nor window.
__device__ __forceinline__ void candidate_range(const Common &c, int i, int64_t &lo, int64_t &hi) {
  const int64_t pos = c.first_pos + i;
  lo = c.sinks;
  hi = pos - c.window;
  if (hi > c.n - 1) hi = c.n - 1;
}

// Dot products of the group's scaled queries with rows (keys, or page min/max) of one head.
// mode 0: q.k (exact); mode 1: sum_d max(q_d lo_d, q_d hi_d) (page bounds).
template <class T, int D, int MODE>
__global__ void __launch_bounds__(kThreads) row_scores_kernel(const Common c, const uint16_t *rows_a,
                                                              const uint16_t *rows_b, int64_t head_stride,
                                                              int64_t n_rows, int item, float *scores) {
  constexpr int L = D / 8, SLOTS = kThreads / L;
  const int h = blockIdx.y, i = blockIdx.z, tid = threadIdx.x, slot = tid / L, lane = tid % L;
  __shared__ float q_s[kMaxGroup][D];
  for (int e = tid; e < c.G * D; e += kThreads) {
    const int g = e / D, d = e % D;
    q_s[g][d] = c.scale_log2 * load_any(c.q, i * c.q_s0 + (h * c.G + g) * c.q_s1 + d * c.q_s2, c.q_dtype);
  }
  __syncthreads();
  float qf[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
    for (int x = 0; x < 8; ++x) qf[g][x] = g < c.G ? q_s[g][lane * 8 + x] : 0.f;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t visible_end = c.first_pos + i;  // last visible slot
  const int64_t r0 = int64_t(blockIdx.x) * SLOTS * 8;
  for (int step = 0; step < 8; ++step) {
    const int64_t r = r0 + step * SLOTS + slot;
    const bool ok = r < n_rows;
    uint4 a = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0);
    if (ok) {
      a = __ldg(reinterpret_cast<const uint4 *>(rows_a + (h * head_stride + r) * D) + lane);
      if (MODE == 1) b = __ldg(reinterpret_cast<const uint4 *>(rows_b + (h * head_stride + r) * D) + lane);
    }
    float fa[8], fb[8];
    unpack8<T>(a, fa);
    unpack8<T>(b, fb);
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= c.G) break;
      float dot = 0.f;
#pragma unroll
      for (int x = 0; x < 8; ++x)
        dot += MODE == 0 ? qf[g][x] * fa[x] : fmaxf(qf[g][x] * fa[x], qf[g][x] * fb[x]);
#pragma unroll
      for (int off = L / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      if (ok && lane == 0) {
        // exact: invisible slots take no part in the softmax; page: pages without a candidate
        // slot are not ranked.
        const bool live = MODE == 0 ? r <= visible_end : (r * item <= hi && (r + 1) * item - 1 >= lo && lo <= hi);
        scores[((int64_t(i) * c.H + h) * c.G + g) * n_rows + r] = live ? dot : -INFINITY;
      }
    }
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
__global__ void mass_kernel(const Common c, const float *scores, const float *norm, int64_t n_rows, int item,
                            bool mean, float *mass) {
  const int h = blockIdx.y, i = blockIdx.z;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t base = (int64_t(i) * c.H + h) * c.G;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < n_rows; r += int64_t(gridDim.x) * blockDim.x) {
    const bool cand = lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
    float m = -1.f;
    if (cand) {
      m = 0.f;
      for (int g = 0; g < c.G; ++g) {
        const float nv = norm[base + g];
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
__global__ void __launch_bounds__(kTopThreads) top_items_kernel(const Common c, const float *mass, int64_t n_items,
                                                                int item, int64_t n_sel, int32_t *out, int64_t o_s0,
                                                                int64_t o_s1, int64_t o_s2, int64_t width) {
  using Scan = cub::BlockScan<int, kTopThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int hist[256];
  __shared__ unsigned prefix_s;
  __shared__ int need_s;
  __shared__ int total_s;
  const int h = blockIdx.x, i = blockIdx.y, tid = threadIdx.x;
  const float *row = mass + (int64_t(i) * c.H + h) * n_items;
  int32_t *o = out + i * o_s0 + h * o_s1;
  int64_t lo, hi;
  candidate_range(c, i, lo, hi);
  const int64_t pos = c.first_pos + i;

  // Radix select on the bits of non-negative floats (ordered like the values).
  if (tid == 0) total_s = 0;
  __syncthreads();
  int mine = 0;
  for (int64_t r = tid; r < n_items; r += kTopThreads) mine += row[r] >= 0.f;
  atomicAdd(&total_s, mine);
  __syncthreads();
  const int64_t total = total_s;
  unsigned prefix = 0, mask = 0;
  int64_t need = n_sel < total ? n_sel : total;
  if (total > n_sel) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kTopThreads) hist[b] = 0;
      __syncthreads();
      for (int64_t r = tid; r < n_items; r += kTopThreads) {
        const float v = row[r];
        const unsigned bits = __float_as_uint(v);
        if (v >= 0.f && (bits & mask) == prefix) atomicAdd(&hist[(bits >> shift) & 255], 1);
      }
      __syncthreads();
      // Counts from the top digit down: the digit where the running count reaches `need`.
      const int count = tid < 256 ? hist[255 - tid] : 0;
      int above, all;
      Scan(scan_tmp).ExclusiveSum(count, above, all);
      if (tid < 256 && above < need && above + count >= need) {
        prefix_s = prefix | (unsigned(255 - tid) << shift);
        need_s = int(need - above);  // still to take within the digit
      }
      __syncthreads();
      prefix = prefix_s;
      need = need_s;
      mask |= 255u << shift;
      __syncthreads();
    }
  } else {
    prefix = 0;  // everything with mass >= 0 qualifies
    need = INT32_MAX;
  }
  // prefix is the threshold's bits; `need` items equal to it are taken, lowest first.

  // Sinks first.
  int64_t written = 0;
  const int64_t sink_end = c.sinks < pos + 1 ? c.sinks : pos + 1;
  const int64_t a_end = sink_end < c.n ? sink_end : c.n;
  for (int64_t j = tid; j < a_end && j < width; j += kTopThreads) o[j * o_s2] = int32_t(j);
  written = a_end < width ? a_end : width;

  int ties_before = 0;
  int64_t slots_before = 0;
  for (int64_t r0 = 0; r0 < n_items; r0 += kTopThreads) {
    const int64_t r = r0 + tid;
    const float v = r < n_items ? row[r] : -1.f;
    const unsigned bits = __float_as_uint(v);
    const bool tie = v >= 0.f && bits == prefix;
    int tie_rank, tie_total;
    Scan(scan_tmp).ExclusiveSum(tie ? 1 : 0, tie_rank, tie_total);
    __syncthreads();
    const bool chosen = v >= 0.f && (bits > prefix || (tie && ties_before + tie_rank < need));
    int64_t s_lo = r * item, s_hi = r * item + item - 1;
    if (s_lo < lo) s_lo = lo;
    if (s_hi > hi) s_hi = hi;
    const int count = chosen && s_hi >= s_lo ? int(s_hi - s_lo + 1) : 0;
    int offset, chunk_total;
    Scan(scan_tmp).ExclusiveSum(count, offset, chunk_total);
    __syncthreads();
    for (int e = 0; e < count; ++e) {
      const int64_t at = written + slots_before + offset + e;
      if (at < width) o[at * o_s2] = int32_t(s_lo + e);
    }
    ties_before += tie_total;
    slots_before += chunk_total;
  }
  written += slots_before;
  if (written > width) written = width;

  // The window, then padding.
  int64_t w_lo = pos - c.window + 1;
  if (w_lo < c.sinks) w_lo = c.sinks;
  int64_t w_hi = pos < c.n - 1 ? pos : c.n - 1;
  for (int64_t j = w_lo + tid; j <= w_hi; j += kTopThreads) {
    const int64_t at = written + (j - w_lo);
    if (at < width) o[at * o_s2] = int32_t(j);
  }
  if (w_hi >= w_lo) written += w_hi - w_lo + 1;
  for (int64_t at = (written < width ? written : width) + tid; at < width; at += kTopThreads) o[at * o_s2] = -1;
}

template <class T, int MODE>
void launch_scores(const Common &c, const uint16_t *a, const uint16_t *b, int64_t head_stride, int64_t n_rows, int item,
                   float *scores, cudaStream_t s) {
  const int rows_per_block = (kThreads / (c.D / 8)) * 8;
  const dim3 grid(unsigned((n_rows + rows_per_block - 1) / rows_per_block), c.H, c.n_q);
  if (c.D == 64) row_scores_kernel<T, 64, MODE><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores);
  else if (c.D == 128) row_scores_kernel<T, 128, MODE><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores);
  else row_scores_kernel<T, 256, MODE><<<grid, kThreads, 0, s>>>(c, a, b, head_stride, n_rows, item, scores);
  check_cuda(cudaGetLastError(), "selection scores launch");
}

}  // namespace

void index_select(const sa_plugin_index &ix, const sa_plugin_select_args &a) {
  const sa_tensor &q = *a.queries, &out = *a.indices;
  const int n_q = int(q.shape[0]), H = ix.heads, G = int(q.shape[1] / H);
  if (G > kMaxGroup) fail(SA_ERR_UNSUPPORTED, "%d query heads per KV head; CUDA selection takes at most %d", G, kMaxGroup);
  if (n_q > 65535) fail(SA_ERR_UNSUPPORTED, "%d queries in one CUDA selection (at most 65535)", n_q);
  DeviceGuard guard(ix.device);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  if (ix.stream != stream) {
    // Appends were queued on the index's stream: order this selection after them.
    cudaEvent_t appended;
    check_cuda(cudaEventCreateWithFlags(&appended, cudaEventDisableTiming), "cudaEventCreate");
    cudaEventRecord(appended, ix.stream);
    cudaStreamWaitEvent(stream, appended, 0);
    cudaEventDestroy(appended);
  }
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

  const bool page = ix.kind == SA_SELECTOR_PAGE;
  const int item = page ? ix.page : 1;
  const int64_t n_items = (ix.size + item - 1) / item;
  const int64_t n_sel = page ? (a.top_k / item > 0 ? a.top_k / item : 1) : a.top_k;
  Workspace ws(ix.device, stream);
  const size_t rows = size_t(n_q) * H * G;
  auto *scores = static_cast<float *>(ws.get(rows * size_t(n_items) * sizeof(float)));
  auto *norm = static_cast<float *>(ws.get(rows * sizeof(float)));
  auto *mass = static_cast<float *>(ws.get(size_t(n_q) * H * size_t(n_items) * sizeof(float)));
  const auto *keys = static_cast<const uint16_t *>(page ? ix.page_min : ix.keys);
  const auto *keys_b = static_cast<const uint16_t *>(page ? ix.page_max : nullptr);
  const int64_t head_stride = page ? ix.capacity / ix.page : ix.capacity;
  if (n_items > 0) {
    if (ix.dtype == SA_DTYPE_F16)
      page ? launch_scores<F16, 1>(c, keys, keys_b, head_stride, n_items, item, scores, stream)
           : launch_scores<F16, 0>(c, keys, keys_b, head_stride, n_items, item, scores, stream);
    else
      page ? launch_scores<BF16, 1>(c, keys, keys_b, head_stride, n_items, item, scores, stream)
           : launch_scores<BF16, 0>(c, keys, keys_b, head_stride, n_items, item, scores, stream);
    if (page) row_norm_kernel<false><<<unsigned(rows), kTopThreads, 0, stream>>>(scores, n_items, norm);
    else row_norm_kernel<true><<<unsigned(rows), kTopThreads, 0, stream>>>(scores, n_items, norm);
    check_cuda(cudaGetLastError(), "selection norm launch");
    const unsigned mb = unsigned((n_items + 255) / 256 < 1024 ? (n_items + 255) / 256 : 1024);
    mass_kernel<<<dim3(mb, H, n_q), 256, 0, stream>>>(c, scores, norm, n_items, item, !page, mass);
    check_cuda(cudaGetLastError(), "selection mass launch");
  }
  top_items_kernel<<<dim3(H, n_q), kTopThreads, 0, stream>>>(c, mass, n_items, item, n_sel,
      static_cast<int32_t *>(out.data), out.strides[0], out.strides[1], out.strides[2], out.shape[2]);
  check_cuda(cudaGetLastError(), "top-k launch");
}

}  // namespace sacuda
