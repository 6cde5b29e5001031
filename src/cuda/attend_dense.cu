// Dense decode on tensor cores (mma.sync m16n8k16, 16-bit inputs, f32 accumulation). The FMA
// kernel (attend_decode.cu) is bound by instruction issue on this call, not by memory: 4 query
// heads times 128 dims of FMAs a key, shuffles and exponentials per head. Here a warp takes 16
// keys of one KV head at a time:
//   scores  S[16 keys][8 columns] = K[16 keys][D] x Q^T, Q's column 2h holding query head h
//           (of the GT <= 4 that share the KV head; odd columns zero). A dot product sums over
//           the dims in any order, so each lane loads whole 16-byte pieces of K and the queries
//           are laid out in the same order;
//   output  O^T[D][8 columns] += V^T[D][16 keys] x P^T[16 keys][8 columns], column 2h holding
//           head h's weights rounded to 16 bits and column 2h + 1 what the rounding dropped,
//           so the weights keep about 16 bits (the sum of weights is summed in f32).
// A lane loads its rows' 16-byte pieces of V and pairs two keys' values of one dim (byte_perm)
// into the operand. Each lane ends the score step holding one head's scores of two keys; four
// shuffles hand every lane the four scores its weight operand needs. The running max is
// raised only when a score passes it by kRescaleAbove (base 2), so the weights stay below
// 2^kRescaleAbove and the output is rarely rescaled. A block of 4 warps takes one split of
// the keys for one query and KV head, its warps taking every fourth tile of 16 keys; a warp's
// next tile's K is loaded once the scores are taken, its V once the output step has read this
// V. On long splits a block takes only part of its share so; the keys past all the shares are
// claimed by warps a piece at a time from a counter per query and group, so that blocks that
// run fast take work off the slow ones (with a fixed split, the blocks of one wave ended their
// loops 30% apart). The blocks' partials are merged exactly as the FMA kernel's (split_merge.cuh).
#include <cmath>
#include <cstdint>

#include "attend_dense.hpp"
#include "half_vec.cuh"
#include "mma_16816.cuh"
#include "plugin_state.hpp"
#include "split_merge.cuh"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kRescaleAbove = 8.f;
constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kMinBlocks = 3;  // a multiprocessor's: 168 registers a thread, so nothing spills
constexpr int kTile = 16;                  // keys a warp takes at a time
constexpr int kStep = kTile * kWarps;      // keys a block takes at a time
constexpr int64_t kMinChunk = 64, kMaxChunk = 16384;
// Long splits (kClaimFrom keys or more): a block takes kStaticPercent of its share in place,
// its warps claim the rest in pieces of kPiece keys (H200, 512K keys: 85 / 64 beat 70, 80, 90
// and pieces of 32; bench/cuda/RESULTS.md, stop 33).
constexpr int kStaticPercent = 85, kPiece = 64;
constexpr int64_t kClaimFrom = 2048;
constexpr int kMaxSplits = 512;
constexpr int64_t kMaxRows = int64_t(1) << 30;  // rows and row counters stay in int

struct DenseParams {
  const uint16_t *q;  // in the keys' dtype
  int64_t q_s0, q_s1, q_s2;
  const char *k, *v;               // bytes
  int64_t k_s0, k_s1, v_s0, v_s1;  // bytes: rows, heads
  int n_kv, n_q, q_offset, G, causal, units;
  float scale_log2;
  void *out;
  int64_t o_s0, o_s1, o_s2;
  int out_dtype;
  float *lse;
  int64_t l_s0, l_s1;
  int splits, chunk;
  float *part_acc, *part_ml;  // splits > 1 (split_merge.cuh)
  unsigned *done;
  unsigned *claimed;  // [n_q][units] pieces claimed, zero between calls; null: no pieces
};

// Fragment layouts: mma_16816.cuh. Scores: key row g (+ 8) is key t0 + g (+ 8); the score
// step's k pair c (c + 4) of step j is this lane's K word 2j (2j + 1): dims 2w, 2w + 1 of
// w = 4c + 16 (j / 2) + 2 (j % 2) (+ 1). Output: m-tile 4w + e, row g (g + 8) is dim
// 64w + 8g + 2e (+ 1); k pair c (c + 4) is keys t0 + 2c, 2c + 1 (t0 + 2c + 8, 2c + 9).
template <class T, int D, int GT>
__global__ void __launch_bounds__(kThreads, kMinBlocks) dense_kernel(const DenseParams p) {
  constexpr int KW = D / 32;  // 16-byte pieces of each of its two K rows a lane loads
  constexpr int VW = D / 64;  // the same of each of its four V rows
  constexpr int STEPS = D / 16;
  const int split = blockIdx.x, u = blockIdx.y, i = blockIdx.z + p.q_offset;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int h0 = u * GT, hk = h0 / p.G;

  // The keys query i sees, [0, seen): split `split` takes [split, split + 1) x chunk of them in
  // place; the rest, from splits x chunk on, is claimed by warps kPiece keys at a time, so that
  // blocks finishing early take work off the slow ones.
  int seen = p.n_kv;
  if (p.causal) {
    const int64_t pos = int64_t(p.n_kv) - p.n_q + i;  // <= n_kv - 1
    seen = pos < 0 ? 0 : int(pos + 1);
  }
  const int begin = split * p.chunk, end = begin + p.chunk < seen ? begin + p.chunk : seen;
  const int dyn0 = p.splits * p.chunk;
  unsigned *claimed = p.claimed ? p.claimed + int64_t(i) * p.units + u : nullptr;
  const int pieces = claimed && seen > dyn0 ? (seen - dyn0 + kPiece - 1) / kPiece : 0;
  // Every warp claims until a claim fails: the last of all claims zeroes the counter.
  const unsigned claims = unsigned(pieces) + unsigned(p.splits) * kWarps;
  unsigned pending = 0;  // lane 0: the claim issued a piece ahead, read when the warp needs it
  if (claimed && lane == 0) pending = atomicAdd(claimed, 1u);
  auto next_piece = [&]() -> int {  // the claimed piece's first key, or seen: none left
    if (!claimed) return seen;
    const unsigned j = __shfl_sync(0xffffffffu, pending, 0);
    if (j < unsigned(pieces)) {
      if (lane == 0) pending = atomicAdd(claimed, 1u);
      return dyn0 + int(j) * kPiece;
    }
    if (lane == 0 && j == claims - 1) atomicExch(claimed, 0u);
    return seen;
  };

  // Column 2h of the score step: query head h0 + h, as 16-bit pairs in the K words' order.
  uint32_t qb[STEPS][2];
  {
    const int h = g >> 1;
    const bool column = (g & 1) == 0 && h < GT;
    const uint16_t *qh = p.q + i * p.q_s0 + (h0 + (column ? h : 0)) * p.q_s1;
#pragma unroll
    for (int j = 0; j < STEPS; ++j)
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const int64_t d = 2 * (4 * c + 16 * (j >> 1) + 2 * (j & 1) + x);
        qb[j][x] = column ? uint32_t(qh[d * p.q_s2]) | uint32_t(qh[(d + 1) * p.q_s2]) << 16 : 0u;
      }
  }

  float acc[STEPS][4];  // O^T tiles: columns 2c, 2c + 1 (head c's high and low parts)
#pragma unroll
  for (int t = 0; t < STEPS; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[t][e] = 0.f;
  float m_qk = -INFINITY;  // running max of head c (this lane's scores)
  float m_pv = -INFINITY;  // running max of head g / 2 (this lane's weights)
  float lsum = 0.f;        // head g / 2's weights this lane took

  // The warp's tile t0 of the range it works through, [t0, range_end) by stride.
  int t0 = begin + kTile * warp, range_end = end, stride = kStep;
  auto take_piece = [&](int &t, int &e, int &st) {
    t = next_piece();
    e = t + kPiece < seen ? t + kPiece : seen;
    st = kTile;
  };
  auto advance = [&](int &t, int &e, int &st) {
    t += st;
    if (t >= e) take_piece(t, e, st);
  };
  if (t0 >= range_end) take_piece(t0, range_end, stride);
  const int last = seen - 1;
  if (t0 < range_end) {
    const char *kb = p.k + hk * p.k_s1 + 16 * c, *vb = p.v + hk * p.v_s1 + 16 * g;
    uint4 kr[2][KW], vr[4][VW];
    // Rows past the end read the last row (in bounds; their weights are 0).
    auto load_k = [&](int t) {
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const int r = t + g + 8 * x;
        const char *row = kb + int64_t(r < last ? r : last) * p.k_s0;
#pragma unroll
        for (int w = 0; w < KW; ++w) kr[x][w] = __ldg(reinterpret_cast<const uint4 *>(row + 64 * w));
      }
    };
    auto load_v = [&](int t) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int r = t + 2 * c + (x & 1) + 8 * (x >> 1);
        const char *row = vb + int64_t(r < last ? r : last) * p.v_s0;
#pragma unroll
        for (int w = 0; w < VW; ++w) vr[x][w] = __ldg(reinterpret_cast<const uint4 *>(row + 128 * w));
      }
    };
    load_k(t0);
    load_v(t0);
    while (t0 < range_end) {
      int t1 = t0, end1 = range_end, stride1 = stride;
      advance(t1, end1, stride1);
      float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};  // two chains
      tile_scores<T, STEPS>(kr, [&](int j) { return make_uint2(qb[j][0], qb[j][1]); }, s0, s1);
      float sa = (s0[0] + s1[0]) * p.scale_log2, sb = (s0[2] + s1[2]) * p.scale_log2;  // keys t0 + g, + 8
      if (t0 + g >= seen) sa = -INFINITY;
      if (t0 + g + 8 >= seen) sb = -INFINITY;
      if (t1 < end1) load_k(t1);

      if (__any_sync(0xffffffffu, fmaxf(sa, sb) > m_qk + kRescaleAbove)) {
        float mx = fmaxf(sa, sb);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        const float m_new = fmaxf(m_qk, mx);
        const float alpha = m_new == -INFINITY ? 1.f : exp2f(m_qk - m_new);
        const float alpha_pv = __shfl_sync(0xffffffffu, alpha, g >> 1);
        m_pv = __shfl_sync(0xffffffffu, m_new, g >> 1);
        m_qk = m_new;
#pragma unroll
        for (int t = 0; t < STEPS; ++t)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[t][e] *= alpha;
        lsum *= alpha_pv;
      }

      // Weights of head g / 2 for keys t0 + 2c, 2c + 1, 2c + 8, 2c + 9; lanes of odd g take
      // what rounding them to 16 bits dropped.
      const int src = 8 * c + (g >> 1);
      const float p0 = exp2f(__shfl_sync(0xffffffffu, sa, src) - m_pv);
      const float p1 = exp2f(__shfl_sync(0xffffffffu, sa, src + 4) - m_pv);
      const float p2 = exp2f(__shfl_sync(0xffffffffu, sb, src) - m_pv);
      const float p3 = exp2f(__shfl_sync(0xffffffffu, sb, src + 4) - m_pv);
      lsum += (p0 + p1) + (p2 + p3);
      uint32_t b0 = pack_pair<T>(p0, p1), b1 = pack_pair<T>(p2, p3);
      if (g & 1) {
        const float2 h01 = T::pair(b0), h23 = T::pair(b1);
        b0 = pack_pair<T>(p0 - h01.x, p1 - h01.y);
        b1 = pack_pair<T>(p2 - h23.x, p3 - h23.y);
      }
#pragma unroll
      for (int w = 0; w < VW; ++w)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const uint32_t x = word_of(vr[0][w], e), y = word_of(vr[1][w], e);
          const uint32_t z = word_of(vr[2][w], e), zz = word_of(vr[3][w], e);
          const uint32_t a[4] = {__byte_perm(x, y, 0x5410), __byte_perm(x, y, 0x7632), __byte_perm(z, zz, 0x5410),
                                 __byte_perm(z, zz, 0x7632)};
          mma_16816<T>(acc[4 * w + e], a, b0, b1);
        }
      if (t1 < end1) load_v(t1);
      t0 = t1;
      range_end = end1;
      stride = stride1;
    }
  }

  // The warp's state: head c's output (high + low parts), head g / 2's max and sum.
  __shared__ float red_acc[kWarps][GT][D];
  __shared__ float red_m[kWarps][GT], red_l[kWarps][GT];
  lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
  lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
  if (c < GT) {
#pragma unroll
    for (int w = 0; w < VW; ++w)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 64 * w + 8 * g + 2 * e;
        red_acc[warp][c][d] = acc[4 * w + e][0] + acc[4 * w + e][1];
        red_acc[warp][c][d + 1] = acc[4 * w + e][2] + acc[4 * w + e][3];
      }
  }
  if (c == 0 && (g & 1) == 0 && (g >> 1) < GT) {
    red_l[warp][g >> 1] = lsum;
    red_m[warp][g >> 1] = lsum > 0.f ? m_pv : -INFINITY;
  }
  finish_block<D, GT, kThreads, kWarps>(p, i, u, split, p.splits, red_acc, red_m, red_l);
}

// Whole waves of blocks: the keys split so that as many resident block slots of the chip as can
// have work do, and no block waits alone for another wave (its split would double the time);
// as many waves as keep splits within kMaxChunk keys, since the tensor cores' f32 sums may
// round toward zero (bounded drift over a warp's tiles), each split at least kMinChunk keys
// and a whole number of block steps.
template <class T, int D, int GT>
void launch(DenseParams &p, bool lse_scratch, const void *owner, cudaStream_t stream, int device) {
  const int64_t n_q = p.n_q, base = n_q * p.units;
  const int64_t target = int64_t(resident_blocks<dense_kernel<T, D, GT>, kThreads>(device)) * sm_count(device);
  const int64_t wave = target / base > 1 ? target / base : 1;
  const int64_t per_wave = wave * kMaxChunk;
  int64_t splits = wave * ((p.n_kv + per_wave - 1) / per_wave);
  const int64_t max_splits = (p.n_kv + kMinChunk - 1) / kMinChunk;
  if (splits > max_splits) splits = max_splits;
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (splits < 1) splits = 1;
  const int64_t chunk = ((p.n_kv + splits - 1) / splits + kStep - 1) / kStep * kStep;
  p.chunk = int(chunk > 0 ? chunk : kStep);
  p.splits = int(p.n_kv > 0 ? (p.n_kv + p.chunk - 1) / p.chunk : 1);
  // Claims balance the blocks of one wave, which start together (with more waves the first
  // blocks would claim pieces before the last ones start, and a warp's keys would no longer
  // stay within kMaxChunk); shorter splits end close together, and claims cost more than they
  // balance (32K keys, 8 groups, 49 splits of 704 keys: 1 us slower).
  const bool claims = p.splits > 1 && p.chunk >= kClaimFrom && base * p.splits <= target;
  if (claims) p.chunk = int(int64_t(p.chunk) * kStaticPercent / 100 / kStep * kStep);
  if (p.splits > 1 || lse_scratch) {
    const size_t parts = p.splits > 1 ? size_t(n_q) * p.units * p.splits * GT : 0;
    const size_t acc_bytes = parts * D * sizeof(float), ml_bytes = parts * 2 * sizeof(float);
    const size_t lse_bytes = lse_scratch ? size_t(n_q) * p.units * GT * sizeof(float) : 0;
    const size_t counters = p.splits > 1 ? size_t(n_q) * p.units : 0;
    const size_t counter_bytes = (claims ? 2 : 1) * counters * sizeof(unsigned);  // done, claimed
    const StreamBuffers b = stream_buffers(owner, device, stream, counter_bytes, acc_bytes + ml_bytes + lse_bytes);
    p.part_acc = static_cast<float *>(b.scratch);
    p.part_ml = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + acc_bytes);
    p.done = static_cast<unsigned *>(b.zeroed);
    if (claims) p.claimed = p.done + counters;
    if (lse_scratch) {  // [n_q][H_q], after the partials
      p.lse = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + acc_bytes + ml_bytes);
      p.l_s0 = int64_t(p.units) * GT;
      p.l_s1 = 1;
    }
  }
  constexpr int64_t kMaxGridZ = 65535;
  for (int64_t q0 = 0; q0 < n_q; q0 += kMaxGridZ) {
    const int nq = int(n_q - q0 < kMaxGridZ ? n_q - q0 : kMaxGridZ);
    p.q_offset = int(q0);
    dense_kernel<T, D, GT><<<dim3(p.splits, p.units, nq), kThreads, 0, stream>>>(p);
    check_cuda(cudaGetLastError(), "dense decode attention launch");
  }
}

template <class T, int D>
void launch_gt(DenseParams &p, int gt, bool lse_scratch, const void *owner, cudaStream_t s, int dev) {
  if (gt == 4) launch<T, D, 4>(p, lse_scratch, owner, s, dev);
  else if (gt == 2) launch<T, D, 2>(p, lse_scratch, owner, s, dev);
  else launch<T, D, 1>(p, lse_scratch, owner, s, dev);
}

template <class T>
void launch_d(DenseParams &p, int D, int gt, bool lse_scratch, const void *owner, cudaStream_t s, int dev) {
  if (D == 64) launch_gt<T, 64>(p, gt, lse_scratch, owner, s, dev);
  else launch_gt<T, 128>(p, gt, lse_scratch, owner, s, dev);
}

}  // namespace

bool dense_fits(const sa_plugin_attend_args &a, const int64_t *head_positions) {
  const int64_t D = a.q->shape[2];
  return !a.indices && !head_positions && a.k->rank == 3 && a.q->dtype == a.k->dtype && a.v->dtype == a.k->dtype &&
         (D == 64 || D == 128) && a.k->shape[0] < kMaxRows;
}

LseView attend_dense(const sa_plugin_attend_args &a, const void *owner, bool need_lse) {
  const sa_tensor &q = *a.q, &k = *a.k, &v = *a.v, &out = *a.out;
  LseView written{};
  if (a.lse) written = {static_cast<float *>(a.lse->data), a.lse->strides[0], a.lse->strides[1]};
  if (q.shape[0] == 0) return written;
  const int64_t H_q = q.shape[1], H_kv = k.shape[1];
  const int G = int(H_q / H_kv), gt = G % 4 == 0 ? 4 : G % 2 == 0 ? 2 : 1;
  DenseParams p{};
  p.q = static_cast<const uint16_t *>(q.data);
  p.q_s0 = q.strides[0];
  p.q_s1 = q.strides[1];
  p.q_s2 = q.strides[2];
  p.k = static_cast<const char *>(k.data);
  p.v = static_cast<const char *>(v.data);
  p.k_s0 = k.strides[0] * 2;
  p.k_s1 = k.strides[1] * 2;
  p.v_s0 = v.strides[0] * 2;
  p.v_s1 = v.strides[1] * 2;
  p.n_kv = int(k.shape[0]);
  p.n_q = int(q.shape[0]);
  p.G = G;
  p.causal = a.causal;
  p.units = int(H_q / gt);
  p.scale_log2 = a.scale * kLog2e;
  p.out = out.data;
  p.o_s0 = out.strides[0];
  p.o_s1 = out.strides[1];
  p.o_s2 = out.strides[2];
  p.out_dtype = out.dtype;
  if (a.lse) {
    p.lse = static_cast<float *>(a.lse->data);
    p.l_s0 = a.lse->strides[0];
    p.l_s1 = a.lse->strides[1];
  }
  DeviceGuard guard(q.device_id);
  const cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  const bool lse_scratch = need_lse && !a.lse;
  if (k.dtype == SA_DTYPE_F16) launch_d<F16>(p, int(q.shape[2]), gt, lse_scratch, owner, stream, q.device_id);
  else launch_d<BF16>(p, int(q.shape[2]), gt, lse_scratch, owner, stream, q.device_id);
  return {p.lse, p.l_s0, p.l_s1};
}

}  // namespace sacuda
