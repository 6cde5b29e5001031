// The eviction policy on the device, choosing exactly what choose_evictions (cache/evict.cpp)
// chooses, in its order: the per-slot rules come from cache/evict_rule.hpp, and the order
// "empty slots (slot order), then evictable ones by (score, position, slot)" is two stable
// radix sorts of the slots, by position and then by a score key (empty slots 0, protected ones
// last). A scan first finds the counts and the first bad position or NaN score (as the CPU
// walk would meet them); the host reads them and stops there or sizes the sorts.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>

#include "cache/evict_rule.hpp"
#include "evict.hpp"
#include "plugin_state.hpp"
#include "sparseattn.h"

namespace sacuda {
namespace {

// Counters of the scan and of the key pass. "first" fields hold n - slot (or 2n - key), so
// that a maximum finds the first slot and zero means none.
struct Summary {
  unsigned long long first_bad_position, first_nan, max_pos_plus1, empty, occupied, protected_count, evictable;
};

constexpr int kBlock = 256;

__device__ unsigned long long warp_sum(unsigned long long v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ unsigned long long warp_max(unsigned long long v) {
  for (int o = 16; o > 0; o /= 2) {
    const unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Positions' rule, occupancy and the newest position, each slot's score over the rows (kept
// in `score`) and the first NaN, as the CPU's walk over slots and rows would find it.
__global__ void scan_kernel(const sa_plugin_evict_args a, float *score, Summary *sum) {
  const int64_t n = a.n;
  unsigned long long bad = 0, nan = 0, maxp = 0, empty = 0, occupied = 0;
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < n; s += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = a.positions[s * a.pos_stride];
    if (p < -1 || p > SA_MAX_POSITION) {
      const unsigned long long f = (unsigned long long)(n - s);
      bad = f > bad ? f : bad;
    } else if (p == -1) {
      ++empty;
    } else {
      ++occupied;
      maxp = (unsigned long long)(p + 1) > maxp ? (unsigned long long)(p + 1) : maxp;
    }
    float sc = 0.f;
    bool row_nan = false;
    for (int64_t r = 0; r < a.rows; ++r) {
      const float v = a.scores[r * a.row_stride + s * a.col_stride];
      row_nan |= isnan(v);
      sc = sa::fold_score(sc, v, r, a.row_max != 0);
    }
    if (row_nan || isnan(sc)) {
      const unsigned long long f = (unsigned long long)(2 * n - (2 * s + (row_nan ? 0 : 1)));
      nan = f > nan ? f : nan;
    }
    score[s] = sc;
  }
  bad = warp_max(bad);
  nan = warp_max(nan);
  maxp = warp_max(maxp);
  empty = warp_sum(empty);
  occupied = warp_sum(occupied);
  if (threadIdx.x % 32 == 0) {
    if (bad) atomicMax(&sum->first_bad_position, bad);
    if (nan) atomicMax(&sum->first_nan, nan);
    if (maxp) atomicMax(&sum->max_pos_plus1, maxp);
    if (empty) atomicAdd(&sum->empty, empty);
    if (occupied) atomicAdd(&sum->occupied, occupied);
  }
}

// An order-preserving map of floats to unsigned (no NaN here); -0 counts as +0, as the CPU's
// comparison has them equal.
__device__ uint32_t float_key(float f) {
  uint32_t u = __float_as_uint(f == 0.f ? 0.f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

constexpr uint32_t kEmptyKey = 0u, kProtectedKey = 0xffffffffu;

// Sort keys of every slot: position (evictable slots; others 0) and score (empty 0, protected
// last, evictable by their ranked score, which maps above 0: no float maps to 0). empties_only:
// 1 for every occupied slot (only the empty slots' order is wanted). Counts protected and
// evictable slots.
__global__ void keys_kernel(const sa_plugin_evict_args a, const float *score, Summary *sum, bool empties_only,
                            uint64_t *pos_key, uint32_t *score_key, int32_t *slot) {
  const int64_t n = a.n, max_pos = int64_t(sum->max_pos_plus1) - 1;
  unsigned long long prot = 0, evictable = 0;
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < n; s += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = a.positions[s * a.pos_stride];
    uint64_t pk = 0;
    uint32_t sk = kEmptyKey;
    if (p != -1) {
      if (sa::protected_slot(p, max_pos, a.sinks, a.window)) {
        ++prot;
        sk = empties_only ? 1u : kProtectedKey;
      } else {
        ++evictable;
        pk = uint64_t(p);
        sk = empties_only ? 1u : float_key(sa::ranked_score(score[s], p, max_pos, a.mean != 0, a.decay));
      }
    }
    pos_key[s] = pk;
    score_key[s] = sk;
    slot[s] = int32_t(s);
  }
  prot = warp_sum(prot);
  evictable = warp_sum(evictable);
  if (threadIdx.x % 32 == 0) {
    if (prot) atomicAdd(&sum->protected_count, prot);
    if (evictable) atomicAdd(&sum->evictable, evictable);
  }
}

__global__ void gather_kernel(const uint32_t *key, const int32_t *order, int64_t n, uint32_t *out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x)
    out[j] = key[order[j]];
}

// freed = the first `take` empty slots, then the `evict` first evictable ones, unless the
// evictable slots fall short (the host reports it).
__global__ void write_kernel(const int32_t *order, const Summary *sum, int64_t take, int64_t evict, int32_t *freed,
                             int64_t stride) {
  if (int64_t(sum->evictable) < evict) return;
  const int64_t empty = int64_t(sum->empty);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < take + evict; k += int64_t(gridDim.x) * blockDim.x)
    freed[k * stride] = order[k < take ? k : empty + (k - take)];
}

int grid_for(int64_t n) {
  const int64_t g = (n + kBlock - 1) / kBlock;
  return int(g < 1024 ? (g > 0 ? g : 1) : 1024);
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

Summary read_summary(const Summary *d, cudaStream_t s) {
  Summary h{};
  check_cuda(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, s), "eviction counts copy");
  check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return h;
}

}  // namespace

void evict(sa_plugin_evict_args &a) {
  a.refused = SA_PLUGIN_EVICT_OK;
  a.n_freed = 0;
  const int64_t n = a.n;
  if (n == 0) return;
  DeviceGuard guard(a.device_id);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);

  // Scratch: summary, scores, two position keys, two score keys, two slot orders, sort space.
  size_t sort_bytes = 0, b2 = 0;
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint64_t *)nullptr, (uint64_t *)nullptr,
                                             (const int32_t *)nullptr, (int32_t *)nullptr, int(n), 0, 64, stream),
             "sort space");
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, b2, (const uint32_t *)nullptr, (uint32_t *)nullptr,
                                             (const int32_t *)nullptr, (int32_t *)nullptr, int(n), 0, 32, stream),
             "sort space");
  sort_bytes = sort_bytes > b2 ? sort_bytes : b2;
  const size_t un = size_t(n);
  const size_t o_score = align256(sizeof(Summary)), o_pk0 = o_score + align256(un * 4), o_pk1 = o_pk0 + align256(un * 8),
               o_sk0 = o_pk1 + align256(un * 8), o_sk1 = o_sk0 + align256(un * 4), o_sl0 = o_sk1 + align256(un * 4),
               o_sl1 = o_sl0 + align256(un * 4), o_sort = o_sl1 + align256(un * 4), total = o_sort + sort_bytes;
  char *base = static_cast<char *>(stream_buffers(a.owner, a.device_id, stream, 0, total).scratch);
  auto *sum = reinterpret_cast<Summary *>(base);
  auto *score = reinterpret_cast<float *>(base + o_score);
  auto *pk0 = reinterpret_cast<uint64_t *>(base + o_pk0), *pk1 = reinterpret_cast<uint64_t *>(base + o_pk1);
  auto *sk0 = reinterpret_cast<uint32_t *>(base + o_sk0), *sk1 = reinterpret_cast<uint32_t *>(base + o_sk1);
  auto *sl0 = reinterpret_cast<int32_t *>(base + o_sl0), *sl1 = reinterpret_cast<int32_t *>(base + o_sl1);
  void *sort_space = base + o_sort;

  check_cuda(cudaMemsetAsync(sum, 0, sizeof(Summary), stream), "eviction counts reset");
  scan_kernel<<<grid_for(n), kBlock, 0, stream>>>(a, score, sum);
  check_cuda(cudaGetLastError(), "eviction scan launch");
  const Summary first = read_summary(sum, stream);
  if (first.first_bad_position) {
    a.refused = SA_PLUGIN_EVICT_POSITION;
    a.refused_slot = n - int64_t(first.first_bad_position);
    check_cuda(cudaMemcpy(&a.refused_value, a.positions + a.refused_slot * a.pos_stride, sizeof(int64_t),
                          cudaMemcpyDeviceToHost), "position copy");
    return;
  }
  if (first.first_nan) {
    const int64_t key = 2 * n - int64_t(first.first_nan);
    a.refused = key % 2 ? SA_PLUGIN_EVICT_NAN_SUMMED : SA_PLUGIN_EVICT_NAN;
    a.refused_slot = key / 2;
    return;
  }
  // incoming <= budget (checked by the core): as choose_evictions.
  const int64_t occupied = int64_t(first.occupied), empty = int64_t(first.empty);
  const int64_t evict = occupied - (a.budget - a.incoming) > 0 ? occupied - (a.budget - a.incoming) : 0;
  const int64_t take = empty < a.incoming ? empty : a.incoming;
  const bool fits = take + evict <= a.freed_cap;

  keys_kernel<<<grid_for(n), kBlock, 0, stream>>>(a, score, sum, evict == 0, pk0, sk0, sl0);
  check_cuda(cudaGetLastError(), "eviction keys launch");
  const int32_t *order = sl0;
  if (take + evict > 0) {
    if (evict > 0) {
      // By position (stable: slot order within a position), then by score (stable again).
      int bits = 1;
      while (bits < 63 && (int64_t(1) << bits) <= int64_t(first.max_pos_plus1)) ++bits;
      size_t bytes = sort_bytes;
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, pk0, pk1, sl0, sl1, int(n), 0, bits, stream),
                 "position sort");
      gather_kernel<<<grid_for(n), kBlock, 0, stream>>>(sk0, sl1, n, sk1);
      check_cuda(cudaGetLastError(), "eviction gather launch");
      bytes = sort_bytes;
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, sk1, sk0, sl1, sl0, int(n), 0, 32, stream),
                 "score sort");
      order = sl0;
    } else {
      size_t bytes = sort_bytes;  // empty slots (key 0) first, in slot order
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, sk0, sk1, sl0, sl1, int(n), 0, 1, stream),
                 "empty slot sort");
      order = sl1;
    }
    if (fits) {
      write_kernel<<<grid_for(take + evict), kBlock, 0, stream>>>(order, sum, take, evict, a.freed, a.freed_stride);
      check_cuda(cudaGetLastError(), "eviction write launch");
    }
  }
  const Summary last = read_summary(sum, stream);
  if (int64_t(last.evictable) < evict) {
    a.refused = SA_PLUGIN_EVICT_BUDGET;
    a.refused_value = int64_t(last.protected_count);
    return;
  }
  if (!fits) {
    a.refused = SA_PLUGIN_EVICT_FREED_SHORT;
    a.refused_value = take + evict;
    return;
  }
  a.n_freed = take + evict;
}

}  // namespace sacuda
