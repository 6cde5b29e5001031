// Slot mass on the device: the same sums as attend/slot_mass.cpp (mass = decay * mass + the
// probabilities of this call), recomputed from q, K and the call's log-sum-exp.
#include "core/visibility.hpp"
#include "half_vec.cuh"
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

__global__ void decay_kernel(const MassParams p) {
  const int64_t total = p.rows * p.n_kv;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    float &m = p.mass[(e / p.n_kv) * p.m_s0 + (e % p.n_kv) * p.m_s1];
    m = decayed(m, p.decay);
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

// Blocks of 256 threads for `total` items of `per_item` threads each.
unsigned grid_for(int64_t total, int per_item = 1) {
  const int64_t g = (total * per_item + 255) / 256;
  return unsigned(g < 1 ? 1 : g > 65536 ? 65536 : g);
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
  if (!a.indices) {
    if (f16) dense_mass_kernel<F16><<<grid_for(p.rows * p.n_kv, 32), 256, 0, stream>>>(p);
    else dense_mass_kernel<BF16><<<grid_for(p.rows * p.n_kv, 32), 256, 0, stream>>>(p);
    check_cuda(cudaGetLastError(), "slot mass launch");
    return;
  }
  decay_kernel<<<grid_for(p.rows * p.n_kv), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "slot mass decay launch");
  const int64_t entries = int64_t(p.n_q) * p.lists * p.width;
  if (entries == 0) return;
  if (f16) sparse_mass_kernel<F16><<<grid_for(entries, 32), 256, 0, stream>>>(p);
  else sparse_mass_kernel<BF16><<<grid_for(entries, 32), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "slot mass launch");
}

}  // namespace sacuda
