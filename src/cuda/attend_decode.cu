// Flash-decoding for sa_attend on the GPU. A block takes one query, a group of GT query heads
// that share a KV head (and its index list, so each gathered row is read once for the group)
// and one chunk of the keys. Lane groups of D/8 threads hold a 16-byte slice of a row each;
// several rows are loaded before the first is used. Each block keeps an online softmax
// (running max, sum, weighted V) in base 2. The blocks of one (query, group) are merged
// exactly by the last of them to finish (an atomic counter per (query, group)), so a call is
// one launch and allocates nothing (per-stream buffers).
// The same kernel serves sa_attend_paged: a row is a physical slot, read at page base + offset;
// dense queries walk their sequence's tokens through its page table. Each query has its own
// length (its sequence's, read on the device), so its number of splits is its own: the grid
// is sized for the longest, and blocks past a query's last split return at once.
#include <cmath>
#include <cstdint>

#include "attend_decode.hpp"
#include "attend_dense.hpp"
#include "core/visibility.hpp"
#include "dependent_launch.cuh"
#include "half_vec.cuh"
#include "plugin_state.hpp"
#include "slot_mass.hpp"
#include "split_merge.cuh"

namespace sacuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kThreads = 128;
constexpr int kUnroll = 4;       // rows each lane group has in flight
constexpr int kRowTile = 512;    // index entries staged in shared memory at a time
constexpr int64_t kMinChunk = 64;
constexpr int kMaxSplits = 512;

struct Params {
  const void *owner;  // host side only: whose stream buffers (plugin_state.hpp)
  const void *q;
  int64_t q_s0, q_s1, q_s2;
  int q_dtype;
  const char *k, *v;  // bytes
  int64_t k_s0, k_s1, v_s0, v_s1;  // bytes: rows within a page, heads
  int64_t k_sp, v_sp;              // bytes between pages
  int64_t page_size;               // rows per page (1 for sa_attend's rows: page = row)
  const int32_t *idx;  // null: dense
  int64_t i_s0, i_s1, i_s2, width;
  int64_t n_kv;        // rows (physical slots) the keys hold
  // Paged batches (batch > 0); sa_attend has batch 0: one sequence of n_kv rows.
  int batch;
  const int32_t *table;  // null: token t in slot t
  int64_t t_s0, t_s1, num_pages, capacity;  // capacity: the most tokens a sequence holds
  const void *lens;      // null: every sequence holds `capacity` tokens
  int64_t len_s0;
  const void *starts;    // null: query b is sequence b's only query
  int64_t st_s0;
  int lens_i64, starts_i64;
  const int64_t *slot_pos;  // null: every slot holds a token
  int64_t pos_s0;
  // Per-KV-head positions, [H_kv][n_kv] (null: row r holds position r; a paged batch's rows
  // are its physical slots); causal queries then count back from the largest of them, kept
  // + 1 in max_pos1 (0: none): one value for sa_attend, one per sequence (its slots) for a
  // paged batch.
  const int64_t *head_pos;
  const unsigned long long *max_pos1;
  int n_q, q_offset, G, per_query_head, causal, units;
  void *out;
  int64_t o_s0, o_s1, o_s2;
  int out_dtype;
  float *lse;
  int64_t l_s0, l_s1;
  int H_q;
  bool lse_scratch;  // host side only: no lse given, but slot mass needs one (stream buffers)
  float scale_log2;
  int splits;
  int64_t chunk;
  float *part_acc, *part_ml;  // splits > 1: [n_q][units][splits][GT][D], [...][GT][2]
  unsigned *done;             // splits > 1: [n_q][units] blocks finished, zero between calls
};

// Element i of an I32 or I64 vector on the device.
__device__ __forceinline__ int64_t int_at(const void *v, int i64, int64_t off) {
  return i64 ? static_cast<const int64_t *>(v)[off] : int64_t(static_cast<const int32_t *>(v)[off]);
}

// The keys query i reads: its sequence's length and its position (the last token it sees when
// causal). Device values are clamped so that no read leaves the tensors, whatever they hold.
struct QuerySpan {
  int b;
  int64_t len, pos;
};

__device__ QuerySpan query_span(const Params &p, int i) {
  if (p.batch == 0) return {0, p.n_kv, p.n_kv - p.n_q + i};
  auto start = [&](int b) {  // query_starts[b], clamped to [0, n_q]
    const int64_t s = int_at(p.starts, p.starts_i64, b * p.st_s0);
    return s < 0 ? int64_t(0) : s > p.n_q ? int64_t(p.n_q) : s;
  };
  int b = i;
  int64_t first = i, next = i + 1;
  if (p.starts) {  // the last sequence whose first query is at or before i
    int lo = 0, hi = p.batch - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (start(mid) <= i) lo = mid; else hi = mid - 1;
    }
    b = lo;
    first = start(b);
    next = start(b + 1);
  }
  int64_t len = p.lens ? int_at(p.lens, p.lens_i64, b * p.len_s0) : p.capacity;
  len = len < 0 ? 0 : len > p.capacity ? p.capacity : len;
  return {b, len, len - (next - first) + (i - first)};
}

// Sequence b's length (clamped as query_span clamps it).
__device__ QuerySpan query_span_of_sequence(const Params &p, int b) {
  int64_t len = p.lens ? int_at(p.lens, p.lens_i64, b * p.len_s0) : p.capacity;
  len = len < 0 ? 0 : len > p.capacity ? p.capacity : len;
  return {b, len, 0};
}

// The physical slot of token t of sequence b, or -1 where its page is out of range.
__device__ __forceinline__ int64_t token_slot(const Params &p, int b, int64_t t) {
  if (!p.table) return t;
  const int64_t page = p.table[b * p.t_s0 + (t / p.page_size) * p.t_s1];
  return page >= 0 && page < p.num_pages ? page * p.page_size + t % p.page_size : -1;
}

// At most 128 registers a thread, so four blocks fit on a multiprocessor. PAGED: a paged batch
// (sa_attend_paged); sa_attend's rows compile without the page arithmetic (6% of dense decode).
template <class T, int D, int GT, bool PAGED>
__global__ void __launch_bounds__(kThreads, 4) decode_kernel(const Params p) {
  constexpr int L = D / 8;             // lanes per row
  constexpr int SLOTS = kThreads / L;  // rows per step of the block
  const int split = blockIdx.x, u = blockIdx.y, i = blockIdx.z + p.q_offset;
  const int h0 = u * GT, hk = h0 / p.G, list = p.per_query_head ? h0 : hk;
  const int tid = threadIdx.x, slot = tid / L, lane = tid % L;
  wait_prior_grid();  // gathered rows: launched as the selection's dependent (below)

  // Dense keys of a paged batch: this query's sequence decides how many splits it has.
  const QuerySpan span = PAGED ? query_span(p, i) : QuerySpan{0, p.n_kv, p.n_kv - p.n_q + i};
  const int64_t len = p.idx ? p.width : span.len;
  const int nsplit = len > 0 ? int((len + p.chunk - 1) / p.chunk) : 1;
  if (split >= nsplit) return;  // past this query's keys (uniform over the block)

  __shared__ int32_t page_s[kRowTile], off_s[kRowTile];  // row = page base + offset; page -1: skipped
  __shared__ float red_acc[SLOTS][GT][D];
  __shared__ float red_m[SLOTS][GT], red_l[SLOTS][GT];

  // Each lane reads its own slice of the queries: all loads issued before the first use.
  float qf[GT][8], acc[GT][8], m[GT], l[GT];
  load_query_slices<GT>(p.q, p.q_dtype, i * p.q_s0 + h0 * p.q_s1 + lane * 8 * p.q_s2, p.q_s1, p.q_s2, p.scale_log2, qf);
#pragma unroll
  for (int g = 0; g < GT; ++g) {
#pragma unroll
    for (int c = 0; c < 8; ++c) acc[g][c] = 0.f;
    m[g] = -INFINITY;
    l[g] = 0.f;
  }

  const int64_t begin = int64_t(split) * p.chunk;
  const int64_t end = begin + p.chunk < len ? begin + p.chunk : len;
  // With head positions the query sits as far below the largest as span.pos below len.
  const int64_t qpos = !p.causal ? sa::kNoPositionLimit
                       : p.head_pos ? int64_t(p.max_pos1[span.b]) - span.len + span.pos
                                    : span.pos;
  const char *kb = p.k + hk * p.k_s1, *vb = p.v + hk * p.v_s1;
  const int32_t *ib = p.idx ? p.idx + i * p.i_s0 + list * p.i_s1 : nullptr;

  for (int64_t t0 = begin; t0 < end; t0 += kRowTile) {
    const int tn = int(end - t0 < kRowTile ? end - t0 : kRowTile);
    __syncthreads();  // the previous tile is consumed
    for (int e = tid; e < tn; e += kThreads) {
      // An index entry is a slot whose position is its row (causal with sa_attend only); a
      // dense key is a token whose slot the page table gives. Out of range: skipped.
      const int64_t t = t0 + e;
      const int64_t r = ib ? int64_t(ib[t * p.i_s2]) : PAGED ? token_slot(p, span.b, t) : t;
      const bool in = r >= 0 && r < p.n_kv;
      const int64_t kpos = !p.head_pos ? (ib ? r : t) : in ? p.head_pos[hk * p.n_kv + r] : sa::kEmptySlotPosition;
      const bool ok = in && sa::sees(qpos, kpos) &&
                      (!PAGED || !p.slot_pos || sa::holds_token(p.slot_pos[r * p.pos_s0]));
      const int64_t page = !PAGED || p.page_size == 1 ? r : r / p.page_size;
      page_s[e] = ok ? int32_t(page) : -1;
      if (PAGED) off_s[e] = ok ? int32_t(r - page * p.page_size) : 0;
    }
    __syncthreads();
    for (int e0 = 0; e0 < tn; e0 += SLOTS * kUnroll) {
      int r[kUnroll];
      uint4 kr[kUnroll], vr[kUnroll];
#pragma unroll
      for (int x = 0; x < kUnroll; ++x) {
        const int e = e0 + x * SLOTS + slot;
        r[x] = e < tn ? page_s[e] : -1;
        kr[x] = make_uint4(0, 0, 0, 0);
        vr[x] = make_uint4(0, 0, 0, 0);
        if (r[x] >= 0) {
          const int64_t o = PAGED ? off_s[e] : 0;
          kr[x] = __ldg(reinterpret_cast<const uint4 *>(kb + r[x] * p.k_sp + o * p.k_s0) + lane);
          vr[x] = __ldg(reinterpret_cast<const uint4 *>(vb + r[x] * p.v_sp + o * p.v_s0) + lane);
        }
      }
      float s[kUnroll][GT];
#pragma unroll
      for (int x = 0; x < kUnroll; ++x) {
        float kf[8];
        unpack8<T>(kr[x], kf);
#pragma unroll
        for (int g = 0; g < GT; ++g) {
          float dot = 0.f;
#pragma unroll
          for (int c = 0; c < 8; ++c) dot = fmaf(qf[g][c], kf[c], dot);
#pragma unroll
          for (int off = L / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
          s[x][g] = r[x] >= 0 ? dot : -INFINITY;
        }
      }
      float vf[kUnroll][8];
#pragma unroll
      for (int x = 0; x < kUnroll; ++x) unpack8<T>(vr[x], vf[x]);
#pragma unroll
      for (int g = 0; g < GT; ++g) {
        float mx = s[0][g];
#pragma unroll
        for (int x = 1; x < kUnroll; ++x) mx = fmaxf(mx, s[x][g]);
        const float mnew = fmaxf(m[g], mx);
        if (mnew == -INFINITY) continue;  // nothing visible yet
        const float alpha = exp2f(m[g] - mnew);
        l[g] *= alpha;
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[g][c] *= alpha;
#pragma unroll
        for (int x = 0; x < kUnroll; ++x) {
          const float w = exp2f(s[x][g] - mnew);
          l[g] += w;
#pragma unroll
          for (int c = 0; c < 8; ++c) acc[g][c] = fmaf(w, vf[x][c], acc[g][c]);
        }
        m[g] = mnew;
      }
    }
  }

  // Merge the lane groups of the block.
#pragma unroll
  for (int g = 0; g < GT; ++g) {
#pragma unroll
    for (int c = 0; c < 8; ++c) red_acc[slot][g][lane * 8 + c] = acc[g][c];
    if (lane == 0) {
      red_m[slot][g] = m[g];
      red_l[slot][g] = l[g];
    }
  }
  finish_block<D, GT, kThreads, SLOTS>(p, i, u, split, nsplit, red_acc, red_m, red_l);
}

// m, or x + 1 where x holds a token and that is larger.
__device__ __forceinline__ unsigned long long with_position(unsigned long long m, int64_t x) {
  return sa::holds_token(x) && (unsigned long long)(x) + 1 > m ? (unsigned long long)(x) + 1 : m;
}

// The warp's largest m into *dst (atomicMax; zeros are not written: dst starts at zero).
__device__ __forceinline__ void warp_max_to(unsigned long long m, unsigned long long *dst) {
  for (int o = 16; o > 0; o /= 2) {
    const unsigned long long w = __shfl_xor_sync(0xffffffffu, m, o);
    m = w > m ? w : m;
  }
  if (threadIdx.x % 32 == 0 && m) atomicMax(dst, m);
}

// The largest of n positions + 1 into *max_pos1 (zeroed before; 0 when every entry is empty).
__global__ void max_position_kernel(const int64_t *pos, int64_t n, unsigned long long *max_pos1) {
  unsigned long long m = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    m = with_position(m, pos[e]);
  warp_max_to(m, max_pos1);
}

// Per sequence b of a paged batch (blockIdx.y), the largest position + 1 any head holds in its
// slots (token t < its length through its page table) into max_pos1[b] (zeroed before).
__global__ void sequence_max_kernel(const Params p, unsigned long long *max_pos1) {
  const int b = blockIdx.y;
  const QuerySpan span = query_span_of_sequence(p, b);
  const int H = p.H_q / p.G;
  unsigned long long m = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < span.len * H;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = token_slot(p, b, e / H);
    m = with_position(m, r >= 0 && r < p.n_kv ? p.head_pos[(e % H) * p.n_kv + r] : sa::kEmptySlotPosition);
  }
  warp_max_to(m, &max_pos1[b]);
}

// Returns p as launched (its lse: the caller's, or the stream buffer it asked for).
template <class T, int D, int GT, bool PAGED>
Params launch(Params p, cudaStream_t stream, int device) {
  // One wave of blocks: the keys split so that every resident block slot of the chip has
  // work, each split at least kMinChunk keys. Dense keys of a paged batch: the lengths are
  // on the device, so the split is sized for the longest a sequence may be, and four times
  // finer, so that shorter sequences (fewer splits) leave no multiprocessor idle.
  const bool varying = p.batch > 0 && !p.idx;
  const int64_t len = p.idx ? p.width : varying ? p.capacity : p.n_kv;
  const int64_t base = int64_t(p.n_q) * p.units;
  const int64_t resident = resident_blocks<decode_kernel<T, D, GT, PAGED>, kThreads>(device);
  const int64_t target = resident * sm_count(device) * (varying ? 4 : 1);
  int64_t splits = (target + base - 1) / base;
  const int64_t max_splits = (len + kMinChunk - 1) / kMinChunk;
  if (splits > max_splits) splits = max_splits;
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (splits < 1) splits = 1;
  p.chunk = len > 0 ? (len + splits - 1) / splits : 0;
  p.splits = int(len > 0 ? (len + p.chunk - 1) / p.chunk : 1);

  const int64_t n_q = p.n_q;
  const bool max_needed = p.head_pos && p.causal;
  if (p.splits > 1 || p.lse_scratch || max_needed) {
    const size_t parts = p.splits > 1 ? size_t(n_q) * p.units * p.splits * GT : 0;
    const size_t acc_bytes = parts * D * sizeof(float), ml_bytes = parts * 2 * sizeof(float);
    const size_t lse_bytes = p.lse_scratch ? (size_t(n_q) * p.H_q * sizeof(float) + 7) / 8 * 8 : 0;
    const int64_t maxima = p.batch > 0 ? p.batch : 1;
    const size_t max_bytes = max_needed ? size_t(maxima) * sizeof(unsigned long long) : 0;
    const StreamBuffers b = stream_buffers(p.owner, device, stream,
                                           p.splits > 1 ? size_t(n_q) * p.units * sizeof(unsigned) : 0,
                                           acc_bytes + ml_bytes + lse_bytes + max_bytes);
    p.part_acc = static_cast<float *>(b.scratch);
    p.part_ml = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + acc_bytes);
    p.done = static_cast<unsigned *>(b.zeroed);
    if (p.lse_scratch) {
      p.lse = reinterpret_cast<float *>(static_cast<char *>(b.scratch) + acc_bytes + ml_bytes);
      p.l_s0 = p.H_q;
      p.l_s1 = 1;
    }
    if (max_needed) {
      auto *max_pos1 = reinterpret_cast<unsigned long long *>(static_cast<char *>(b.scratch) + acc_bytes + ml_bytes +
                                                              lse_bytes);
      const int64_t n = p.n_kv * (p.H_q / p.G);
      check_cuda(cudaMemsetAsync(max_pos1, 0, max_bytes, stream), "largest position reset");
      const int64_t blocks = (n + 255) / 256;
      const unsigned grid = unsigned(blocks < 1 ? 1 : blocks > 1024 ? 1024 : blocks);
      if (p.batch > 0) {  // per sequence: its own slots
        const int64_t per = (p.capacity * (p.H_q / p.G) + 255) / 256;
        sequence_max_kernel<<<dim3(unsigned(per < 1 ? 1 : per > 64 ? 64 : per), unsigned(p.batch)), 256, 0, stream>>>(
            p, max_pos1);
      } else {
        max_position_kernel<<<grid, 256, 0, stream>>>(p.head_pos, n, max_pos1);
      }
      check_cuda(cudaGetLastError(), "largest position launch");
      p.max_pos1 = max_pos1;
    }
  }
  constexpr int64_t kMaxGridZ = 65535;
  for (int64_t q0 = 0; q0 < n_q; q0 += kMaxGridZ) {
    const int nq = int(n_q - q0 < kMaxGridZ ? n_q - q0 : kMaxGridZ);
    p.q_offset = int(q0);
    if (p.idx && !PAGED) {  // placed while the selection's candidates kernel writes the rows
      launch_dependent(decode_kernel<T, D, GT, PAGED>, dim3(p.splits, p.units, nq), dim3(kThreads), 0, stream, device,
                       "decode attention launch", p);
      continue;
    }
    decode_kernel<T, D, GT, PAGED><<<dim3(p.splits, p.units, nq), kThreads, 0, stream>>>(p);
    check_cuda(cudaGetLastError(), "decode attention launch");
  }
  return p;
}

template <class T, int D>
Params launch_gt(const Params &p, int gt, cudaStream_t s, int dev) {
  if (p.batch > 0) {
    if (gt == 4) return launch<T, D, 4, true>(p, s, dev);
    if (gt == 2) return launch<T, D, 2, true>(p, s, dev);
    return launch<T, D, 1, true>(p, s, dev);
  }
  if (gt == 4) return launch<T, D, 4, false>(p, s, dev);
  if (gt == 2) return launch<T, D, 2, false>(p, s, dev);
  return launch<T, D, 1, false>(p, s, dev);
}

template <class T>
Params launch_d(const Params &p, int D, int gt, cudaStream_t s, int dev) {
  if (D == 64) return launch_gt<T, 64>(p, gt, s, dev);
  if (D == 128) return launch_gt<T, 128>(p, gt, s, dev);
  return launch_gt<T, 256>(p, gt, s, dev);
}

// Parameters shared by sa_attend and sa_attend_paged: queries, K/V (rank 3 [n, H_kv, D] rows,
// or rank 4 [pages, page_size, H_kv, D]), index lists, outputs; checks what the kernels need
// beyond the core's checks.
Params common_params(const sa_tensor &q, const sa_tensor &k, const sa_tensor &v, const sa_tensor *indices,
                     const sa_tensor &out, const sa_tensor *lse, bool per_query_head, bool causal, float scale,
                     const void *owner, int &gt) {
  const int kr = k.rank - 3;  // the dimension of rows within a page
  const int64_t n_q = q.shape[0], H_q = q.shape[1], D = q.shape[2], H_kv = k.shape[kr + 1];
  const int64_t rows = kr ? k.shape[0] * k.shape[1] : k.shape[0];
  if (!is_half_type(k.dtype))
    fail(SA_ERR_UNSUPPORTED, "k and v are %s; the CUDA kernels read f16 or bf16 K/V",
         k.dtype == SA_DTYPE_F32 ? "f32" : "not floating point");
  if (D != 64 && D != 128 && D != 256)
    fail(SA_ERR_UNSUPPORTED, "head dimension %lld; the CUDA kernels take 64, 128 or 256", (long long)D);
  if (k.strides[kr + 2] != 1 || v.strides[kr + 2] != 1)
    fail(SA_ERR_UNSUPPORTED, "k and v need a contiguous head dimension (stride 1) on CUDA");
  bool aligned = reinterpret_cast<uintptr_t>(k.data) % 16 == 0 && reinterpret_cast<uintptr_t>(v.data) % 16 == 0;
  for (int d = 0; d <= kr + 1; ++d) aligned &= k.strides[d] % 8 == 0 && v.strides[d] % 8 == 0;
  if (!aligned) fail(SA_ERR_UNSUPPORTED, "k and v rows must start on 16-byte boundaries on CUDA (data and strides)");
  if (rows > INT32_MAX) fail(SA_ERR_UNSUPPORTED, "%lld key rows; the CUDA kernels address rows with int32", (long long)rows);
  if (n_q > INT32_MAX / 2) fail(SA_ERR_UNSUPPORTED, "%lld queries in one call", (long long)n_q);

  const int G = int(H_q / H_kv);
  gt = per_query_head ? 1 : (G % 4 == 0 ? 4 : G % 2 == 0 ? 2 : 1);
  Params p{};
  p.q = q.data;
  p.q_s0 = q.strides[0];
  p.q_s1 = q.strides[1];
  p.q_s2 = q.strides[2];
  p.q_dtype = q.dtype;
  p.k = static_cast<const char *>(k.data);
  p.v = static_cast<const char *>(v.data);
  p.k_s0 = k.strides[kr] * 2;
  p.k_s1 = k.strides[kr + 1] * 2;
  p.v_s0 = v.strides[kr] * 2;
  p.v_s1 = v.strides[kr + 1] * 2;
  p.page_size = kr ? k.shape[1] : 1;
  p.k_sp = k.strides[0] * 2;  // rank 3: a page is a row
  p.v_sp = v.strides[0] * 2;
  if (indices) {
    p.idx = static_cast<const int32_t *>(indices->data);
    p.i_s0 = indices->strides[0];
    p.i_s1 = indices->strides[1];
    p.i_s2 = indices->strides[2];
    p.width = indices->shape[2];
  }
  p.n_kv = rows;
  p.n_q = int(n_q);
  p.G = G;
  p.per_query_head = per_query_head;
  p.causal = causal;
  p.units = int(H_q / gt);
  p.out = out.data;
  p.o_s0 = out.strides[0];
  p.o_s1 = out.strides[1];
  p.o_s2 = out.strides[2];
  p.out_dtype = out.dtype;
  if (lse) {
    p.lse = static_cast<float *>(lse->data);
    p.l_s0 = lse->strides[0];
    p.l_s1 = lse->strides[1];
  }
  p.scale_log2 = scale * kLog2e;
  p.owner = owner;
  p.H_q = int(H_q);
  return p;
}

Params launch_any(const Params &p, sa_dtype kv_dtype, int D, int gt, cudaStream_t stream, int device) {
  return kv_dtype == SA_DTYPE_F16 ? launch_d<F16>(p, D, gt, stream, device) : launch_d<BF16>(p, D, gt, stream, device);
}

}  // namespace

void attend(const sa_plugin_attend_args &a) {
  const void *owner = a.struct_size >= offsetof(sa_plugin_attend_args, owner) + sizeof a.owner ? a.owner : nullptr;
  const bool mass = a.struct_size >= offsetof(sa_plugin_attend_args, mass_decay) + sizeof a.mass_decay && a.slot_mass;
  const bool heads = a.struct_size >= offsetof(sa_plugin_attend_args, head_key_positions) + sizeof a.head_key_positions;
  int gt = 1;
  Params p = common_params(*a.q, *a.k, *a.v, a.indices, *a.out, a.lse, a.per_query_head, a.causal, a.scale, owner, gt);
  p.lse_scratch = mass && !a.lse;
  p.head_pos = heads ? a.head_key_positions : nullptr;
  if (p.head_pos && mass && a.slot_mass->rank != 2)
    fail(SA_ERR_SHAPE, "slot_mass must be [H_kv, n_kv] with per-KV-head positions");
  DeviceGuard guard(a.q->device_id);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  if (dense_fits(a, p.head_pos)) {  // tensor cores (attend_dense.cu)
    const LseView l = attend_dense(a, owner, mass);
    if (mass) accumulate_slot_mass(a, l.lse, l.s0, l.s1, nullptr, nullptr, stream);
    return;
  }
  if (p.n_q > 0) p = launch_any(p, a.k->dtype, int(a.q->shape[2]), gt, stream, a.q->device_id);
  if (mass) accumulate_slot_mass(a, p.lse, p.l_s0, p.l_s1, p.head_pos, p.max_pos1, stream);
}

void attend_paged(const sa_plugin_attend_paged_args &a) {
  if (a.k->rank != 4) fail(SA_ERR_INTERNAL, "paged k of rank %d (the core passes rank 4)", int(a.k->rank));
  const int64_t *head_pos =
      a.struct_size >= offsetof(sa_plugin_attend_paged_args, head_key_positions) + sizeof a.head_key_positions
          ? a.head_key_positions
          : nullptr;
  // Sparse entries are taken as given (the selection applied the causal limit), except with
  // per-head positions: those mask them as they mask dense keys.
  int gt = 1;
  Params p = common_params(*a.q, *a.k, *a.v, a.indices, *a.out, a.lse, a.per_query_head,
                           a.causal && (!a.indices || head_pos), a.scale, a.owner, gt);
  p.head_pos = head_pos;
  if (a.batch < 1 || a.batch > INT32_MAX) fail(SA_ERR_UNSUPPORTED, "%lld sequences in one call", (long long)a.batch);
  p.batch = int(a.batch);
  p.num_pages = a.k->shape[0];
  p.capacity = p.n_kv;
  if (a.page_table) {
    p.table = static_cast<const int32_t *>(a.page_table->data);
    p.t_s0 = a.page_table->strides[0];
    p.t_s1 = a.page_table->strides[1];
    p.capacity = a.page_table->shape[1] * p.page_size;
  }
  if (a.seq_lens) {
    p.lens = a.seq_lens->data;
    p.len_s0 = a.seq_lens->strides[0];
    p.lens_i64 = a.seq_lens->dtype == SA_DTYPE_I64;
  }
  if (a.query_starts) {
    p.starts = a.query_starts->data;
    p.st_s0 = a.query_starts->strides[0];
    p.starts_i64 = a.query_starts->dtype == SA_DTYPE_I64;
  }
  if (a.slot_positions) {
    p.slot_pos = static_cast<const int64_t *>(a.slot_positions->data);
    p.pos_s0 = a.slot_positions->strides[0];
  }
  DeviceGuard guard(a.q->device_id);
  if (p.n_q > 0) launch_any(p, a.k->dtype, int(a.q->shape[2]), gt, static_cast<cudaStream_t>(a.stream), a.q->device_id);
}

}  // namespace sacuda
