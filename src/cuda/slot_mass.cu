// Slot mass on the device: the same sums as attend/slot_mass.cpp (mass = decay * mass + the
// probabilities of this call), recomputed from q, K and the call's log-sum-exp. Queries in the
// keys' dtype go to the tensor cores (mass_mma_kernel: one more read of the rows attended, the
// group's heads summed in registers); other calls keep a warp per mass element or index entry.
#include <algorithm>

#include "core/visibility.hpp"
#include "half_vec.cuh"
#include "mma_16816.cuh"
#include "plugin_state.hpp"
#include "slot_mass.hpp"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

struct MassParams {
  const void *q;
  int64_t q_s0, q_s1, q_s2;
  int q_dtype;
  const uint16_t *k;  // f16/bf16
  int64_t k_s0, k_s1; // elements; the head dimension is contiguous
  const int32_t *idx; // null: dense
  int64_t i_s0, i_s1, i_s2, width, lists;
  int64_t n_kv;
  int n_q, H_kv, G, D, per_query_head, causal;
  const float *lse;
  int64_t l_s0, l_s1;
  float scale_log2;
  float *mass;
  int64_t rows, m_s0, m_s1;  // rows: 1 ([n_kv]) or H_kv
  float decay;
  const int64_t *head_pos;              // [H_kv][n_kv] or null (row j holds position j)
  const unsigned long long *max_pos1;   // causal with head_pos: their largest + 1
};

// The position query i sits at (causal) or no limit.
__device__ __forceinline__ int64_t query_limit(const MassParams &p, int i) {
  if (!p.causal) return sa::kNoPositionLimit;
  return p.head_pos ? int64_t(*p.max_pos1) - p.n_q + i : p.n_kv - p.n_q + i;
}

// The position key row j of KV head hk holds.
__device__ __forceinline__ int64_t key_position(const MassParams &p, int hk, int64_t j) {
  return p.head_pos ? p.head_pos[hk * p.n_kv + j] : j;
}

__device__ __forceinline__ float decayed(float x, float decay) { return decay == 0.f ? 0.f : x * decay; }

// The probability of key row j for query i summed over heads [h0, h1) of KV head hk, computed
// by one warp (lanes across D); every lane returns the sum.
template <class T>
__device__ float row_probability(const MassParams &p, int i, int hk, int h0, int h1, int64_t j, int lane) {
  const uint16_t *kr = p.k + j * p.k_s0 + hk * p.k_s1;
  float sum = 0.f;
  for (int h = h0; h < h1; ++h) {
    const float lse = p.lse[i * p.l_s0 + h * p.l_s1];
    if (lse == -INFINITY) continue;  // the query saw no key
    const int64_t qo = i * p.q_s0 + h * p.q_s1;
    float dot = 0.f;
    for (int d = lane; d < p.D; d += 32) dot = fmaf(load_any(p.q, qo + d * p.q_s2, p.q_dtype), T::one(kr[d]), dot);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    sum += exp2f(dot * p.scale_log2 - lse * kLog2e);
  }
  return sum;
}

// Dense: one warp per mass element, decayed then added to in query, KV head, head order.
template <class T>
__global__ void dense_mass_kernel(const MassParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t total = p.rows * p.n_kv, warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t e = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; e < total; e += warps) {
    const int64_t r = e / p.n_kv, j = e % p.n_kv;
    const int hk0 = p.rows == 1 ? 0 : int(r), hk1 = p.rows == 1 ? p.H_kv : int(r) + 1;
    float add = 0.f;
    for (int i = 0; i < p.n_q; ++i)
      for (int hk = hk0; hk < hk1; ++hk)
        if (sa::sees(query_limit(p, i), key_position(p, hk, j)))  // empty rows, future positions: nothing
          add += row_probability<T>(p, i, hk, hk * p.G, (hk + 1) * p.G, j, lane);
    if (lane == 0) {
      float &m = p.mass[r * p.m_s0 + j * p.m_s1];
      m = decayed(m, p.decay) + add;
    }
  }
}

// Mass rows over blockIdx.y, slots over the x threads (no 64-bit division an element).
__global__ void decay_kernel(const MassParams p) {
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    float *row = p.mass + r * p.m_s0;
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < p.n_kv; j += int64_t(gridDim.x) * blockDim.x)
      row[j * p.m_s1] = decayed(row[j * p.m_s1], p.decay);
  }
}

// Sparse: one warp per index entry; entries outside [0, n_kv) and -1 are skipped, as the
// attention kernel skips them.
template <class T>
__global__ void sparse_mass_kernel(const MassParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t total = int64_t(p.n_q) * p.lists * p.width, warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t e = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; e < total; e += warps) {
    const int i = int(e / (p.lists * p.width));
    const int l = int((e / p.width) % p.lists);
    const int64_t w = e % p.width;
    const int64_t j = p.idx[i * p.i_s0 + l * p.i_s1 + w * p.i_s2];
    const int hk = p.per_query_head ? l / p.G : l;
    if (j < 0 || j >= p.n_kv || !sa::sees(query_limit(p, i), key_position(p, hk, j))) continue;  // the whole warp
    const int h0 = p.per_query_head ? l : l * p.G, h1 = p.per_query_head ? l + 1 : (l + 1) * p.G;
    const float add = row_probability<T>(p, i, hk, h0, h1, j, lane);
    if (lane == 0) atomicAdd(&p.mass[(p.rows == 1 ? 0 : hk) * p.m_s0 + j * p.m_s1], add);
  }
}

// ------------------------------------------------------------------ tensor cores
// A unit is what one block stages the query columns of: dense, one mass row (its KV heads
// [hk0, hk1), every query and head of each); sparse, one index list of one query (its KV
// head, its heads). A warp takes 16 rows (keys, or index entries) at a time: for each KV head,
// S[16 rows][8 columns] = K x Q^T by mma_16816 in attend_dense.cu's order of K words, then
// 2^(s - lse2) summed over the columns in registers. Dense: each mass element of the row is
// read, decayed and written once, by the lane holding its sum; sparse: added atomically (the
// decay ran before, decay_kernel).
constexpr int kMmaWarps = 4;
constexpr int kMaxColTiles = 8;  // columns of 8 a unit stages (64: a decode step's 32 heads fit)

// The column tiles a unit needs: per KV head, ceil(columns / 8).
__host__ __device__ inline int col_tiles_per_head(const MassParams &p, bool sparse) {
  const int cols = sparse ? (p.per_query_head ? 1 : p.G) : p.n_q * p.G;
  return (cols + 7) / 8;
}

template <class T, int D, bool SPARSE>
__global__ void __launch_bounds__(kMmaWarps * 32) mass_mma_kernel(const MassParams p) {
  constexpr int KW = D / 32, STEPS = D / 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  // B fragments in lane order (conflict-free reads), per column tile and step.
  __shared__ uint2 qf_s[kMaxColTiles][STEPS][32];
  __shared__ float lse2_s[kMaxColTiles * 8];   // +inf: no column (its weights are 0)
  __shared__ int64_t limit_s[kMaxColTiles * 8];

  const int per_head = col_tiles_per_head(p, SPARSE);
  const int64_t units = SPARSE ? int64_t(p.n_q) * p.lists : p.rows;
  const int64_t len = SPARSE ? p.width : p.n_kv;
  const int64_t tiles = (len + 15) / 16;
  for (int64_t unit = blockIdx.y; unit < units; unit += gridDim.y) {
    // The unit's KV heads and columns: column (hk - hk0) * 8 * per_head + n is query n / G,
    // head hk * G + n % G (dense), or head h0 + n of query i (sparse).
    const int i_s = SPARSE ? int(unit / p.lists) : 0, l = SPARSE ? int(unit % p.lists) : 0;
    const int hk0 = SPARSE ? (p.per_query_head ? l / p.G : l) : p.rows == 1 ? 0 : int(unit);
    const int hk1 = SPARSE || p.rows != 1 ? hk0 + 1 : p.H_kv;
    const int ncols = SPARSE ? (p.per_query_head ? 1 : p.G) : p.n_q * p.G;
    const int sh0 = SPARSE ? (p.per_query_head ? l : l * p.G) : 0;
    __syncthreads();  // the previous unit's columns are no longer read
    for (int e = threadIdx.x; e < (hk1 - hk0) * per_head * 8; e += blockDim.x) {
      const int hk = hk0 + e / (per_head * 8), n = e % (per_head * 8);
      const int i = SPARSE ? i_s : n / p.G, h = SPARSE ? sh0 + n : hk * p.G + n % p.G;
      float lse2 = INFINITY;
      if (n < ncols) {
        const float lse = p.lse[i * p.l_s0 + h * p.l_s1];
        if (lse != -INFINITY) lse2 = lse * kLog2e;  // -inf: the query saw no key
      }
      lse2_s[e] = lse2;
      limit_s[e] = n < ncols ? query_limit(p, i) : sa::kNoPositionLimit;
    }
    // Column ct * 8 + gg's dims in the order a lane's K words hold them (attend_dense.cu).
    const uint16_t *q = static_cast<const uint16_t *>(p.q);
    for (int e = threadIdx.x; e < (hk1 - hk0) * per_head * STEPS * 32; e += blockDim.x) {
      const int ct = e / (STEPS * 32), j = e / 32 % STEPS, ln = e % 32, gg = ln / 4, cc = ln % 4;
      const int hk = hk0 + ct / per_head, n = (ct % per_head) * 8 + gg;
      uint32_t w[2] = {0u, 0u};
      if (n < ncols) {
        const int i = SPARSE ? i_s : n / p.G, h = SPARSE ? sh0 + n : hk * p.G + n % p.G;
        const uint16_t *qh = q + i * p.q_s0 + h * p.q_s1;
        for (int x = 0; x < 2; ++x) {
          const int64_t d = 2 * (4 * cc + 16 * (j >> 1) + 2 * (j & 1) + x);
          w[x] = uint32_t(qh[d * p.q_s2]) | uint32_t(qh[(d + 1) * p.q_s2]) << 16;
        }
      }
      qf_s[ct][j][ln] = make_uint2(w[0], w[1]);
    }
    __syncthreads();

    const int32_t *list = SPARSE ? p.idx + i_s * p.i_s0 + l * p.i_s1 : nullptr;
    for (int64_t tile = int64_t(blockIdx.x) * kMmaWarps + warp; tile < tiles; tile += int64_t(gridDim.x) * kMmaWarps) {
      // This lane's rows: entries t0 + g and t0 + g + 8 (-1: none).
      int64_t row[2];
      for (int x = 0; x < 2; ++x) {
        const int64_t t = tile * 16 + g + 8 * x;
        int64_t r = -1;
        if (t < len) r = SPARSE ? int64_t(list[t * p.i_s2]) : t;
        row[x] = r >= 0 && r < p.n_kv ? r : -1;
      }
      float add[2] = {0.f, 0.f};
      for (int hk = hk0; hk < (per_head ? hk1 : hk0); ++hk) {  // no queries: no columns, nothing to read
        int64_t kpos[2];
        uint4 kr[2][KW];
        for (int x = 0; x < 2; ++x) {
          kpos[x] = row[x] < 0 ? sa::kEmptySlotPosition : key_position(p, hk, row[x]);
          const int64_t r = row[x] < 0 ? 0 : row[x];
          const char *base = reinterpret_cast<const char *>(p.k + r * p.k_s0 + hk * p.k_s1) + 16 * c;
#pragma unroll
          for (int w = 0; w < KW; ++w) kr[x][w] = __ldg(reinterpret_cast<const uint4 *>(base + 64 * w));
        }
        const int ct0 = (hk - hk0) * per_head;
        for (int ct = ct0; ct < ct0 + per_head; ++ct) {
          float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};  // two chains
          tile_scores<T, STEPS>(kr, [&](int j) { return qf_s[ct][j][lane]; }, s0, s1);
          // C: rows g, g + 8 (this lane's two rows) of columns 2c, 2c + 1.
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            const int col = ct * 8 + 2 * c + (v & 1), x = v >> 1;
            if (sa::sees(limit_s[col], kpos[x])) add[x] += exp2f((s0[v] + s1[v]) * p.scale_log2 - lse2_s[col]);
          }
        }
      }
      for (int x = 0; x < 2; ++x) {  // the four lanes of a row hold its columns' parts
        add[x] += __shfl_xor_sync(0xffffffffu, add[x], 1);
        add[x] += __shfl_xor_sync(0xffffffffu, add[x], 2);
      }
      if (c == 0)
        for (int x = 0; x < 2; ++x) {
          if (row[x] < 0) continue;
          float *m = p.mass + (p.rows == 1 ? 0 : hk0) * p.m_s0 + row[x] * p.m_s1;
          if (SPARSE) atomicAdd(m, add[x]);
          else *m = decayed(*m, p.decay) + add[x];
        }
    }
  }
}

// Blocks of 256 threads for `total` items of `per_item` threads each.
unsigned grid_for(int64_t total, int per_item = 1) {
  const int64_t g = (total * per_item + 255) / 256;
  return unsigned(g < 1 ? 1 : g > 65536 ? 65536 : g);
}

template <bool SPARSE>
void launch_mma(bool f16, const MassParams &p, dim3 grid, cudaStream_t stream) {
  auto go = [&](auto kernel) { kernel<<<grid, kMmaWarps * 32, 0, stream>>>(p); };
  if (f16) {
    if (p.D == 64) go(mass_mma_kernel<F16, 64, SPARSE>);
    else if (p.D == 128) go(mass_mma_kernel<F16, 128, SPARSE>);
    else go(mass_mma_kernel<F16, 256, SPARSE>);
  } else {
    if (p.D == 64) go(mass_mma_kernel<BF16, 64, SPARSE>);
    else if (p.D == 128) go(mass_mma_kernel<BF16, 128, SPARSE>);
    else go(mass_mma_kernel<BF16, 256, SPARSE>);
  }
  check_cuda(cudaGetLastError(), "slot mass launch");
}

}  // namespace

void accumulate_slot_mass(const sa_plugin_attend_args &a, const float *lse, int64_t l_s0, int64_t l_s1,
                          const int64_t *head_pos, const unsigned long long *max_pos1, cudaStream_t stream) {
  const sa_tensor &q = *a.q, &k = *a.k, &m = *a.slot_mass;
  MassParams p{};
  p.q = q.data;
  p.q_s0 = q.strides[0];
  p.q_s1 = q.strides[1];
  p.q_s2 = q.strides[2];
  p.q_dtype = q.dtype;
  p.k = static_cast<const uint16_t *>(k.data);
  p.k_s0 = k.strides[0];
  p.k_s1 = k.strides[1];
  p.n_kv = k.shape[0];
  p.n_q = int(q.shape[0]);
  p.H_kv = int(k.shape[1]);
  p.G = int(q.shape[1] / k.shape[1]);
  p.D = int(q.shape[2]);
  p.per_query_head = a.per_query_head;
  p.causal = a.causal;
  p.lse = lse;
  p.l_s0 = l_s0;
  p.l_s1 = l_s1;
  p.scale_log2 = a.scale * kLog2e;
  p.mass = static_cast<float *>(m.data);
  p.rows = m.rank == 2 ? m.shape[0] : 1;
  p.m_s0 = m.rank == 2 ? m.strides[0] : 0;
  p.m_s1 = m.strides[m.rank - 1];
  p.decay = a.mass_decay;
  p.head_pos = head_pos;
  p.max_pos1 = max_pos1;
  if (a.indices) {
    p.idx = static_cast<const int32_t *>(a.indices->data);
    p.i_s0 = a.indices->strides[0];
    p.i_s1 = a.indices->strides[1];
    p.i_s2 = a.indices->strides[2];
    p.lists = a.indices->shape[1];
    p.width = a.indices->shape[2];
  }
  const bool f16 = k.dtype == SA_DTYPE_F16;
  const int heads_staged = a.indices || p.rows != 1 ? 1 : p.H_kv;  // KV heads a unit's columns cover
  const bool mma = q.dtype == k.dtype && (p.D == 64 || p.D == 128 || p.D == 256) &&
                   int64_t(heads_staged) * col_tiles_per_head(p, a.indices) <= kMaxColTiles;
  const int device = q.device_id, sms = sm_count(device);
  if (mma && !a.indices) {  // the decay fused: one read and write of each mass element
    const int64_t tiles = (p.n_kv + 15) / 16, rows = p.rows;
    const int64_t x = std::min<int64_t>((tiles + kMmaWarps - 1) / kMmaWarps, std::max<int64_t>(1, 8 * sms / rows));
    const dim3 grid(unsigned(std::max<int64_t>(x, 1)), unsigned(std::min<int64_t>(rows, 65535)));
    launch_mma<false>(f16, p, grid, stream);
    return;
  }
  if (!a.indices) {
    if (f16) dense_mass_kernel<F16><<<grid_for(p.rows * p.n_kv, 32), 256, 0, stream>>>(p);
    else dense_mass_kernel<BF16><<<grid_for(p.rows * p.n_kv, 32), 256, 0, stream>>>(p);
    check_cuda(cudaGetLastError(), "slot mass launch");
    return;
  }
  if (p.decay != 1.f) {
    const int64_t x = std::min<int64_t>((p.n_kv + 1023) / 1024, 4096);
    const dim3 grid(unsigned(std::max<int64_t>(x, 1)), unsigned(std::min<int64_t>(p.rows, 65535)));
    decay_kernel<<<grid, 256, 0, stream>>>(p);
    check_cuda(cudaGetLastError(), "slot mass decay launch");
  }
  const int64_t entries = int64_t(p.n_q) * p.lists * p.width;
  if (entries == 0) return;
  if (mma) {
    const int64_t units = int64_t(p.n_q) * p.lists, tiles = (p.width + 15) / 16;
    const int64_t x = std::min<int64_t>((tiles + kMmaWarps - 1) / kMmaWarps, std::max<int64_t>(1, 8 * sms / units));
    const dim3 grid(unsigned(std::max<int64_t>(x, 1)), unsigned(std::min<int64_t>(units, 65535)));
    launch_mma<true>(f16, p, grid, stream);
    return;
  }
  if (f16) sparse_mass_kernel<F16><<<grid_for(entries, 32), 256, 0, stream>>>(p);
  else sparse_mass_kernel<BF16><<<grid_for(entries, 32), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "slot mass launch");
}

}  // namespace sacuda
