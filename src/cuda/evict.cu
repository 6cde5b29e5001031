// The eviction policy on the device, choosing exactly what choose_evictions (cache/evict.cpp)
// chooses, in its order: the per-slot rules come from cache/evict_rule.hpp, and the order
// "empty slots (slot order), then evictable ones by (score, position, slot)" is two stable
// radix sorts of the slots, by position and then by a score key (empty slots 0, protected ones
// last). A scan first finds the counts and the first bad position or NaN score (as the CPU
// walk would meet them); the host reads them and stops there or sizes the sorts.
#include <cub/device/device_radix_sort.cuh>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

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

// Slots head h frees, given its counts: max(0, occupied + incoming - budget) to evict, and
// min(empty, incoming) empty ones to take.
__host__ __device__ int64_t to_evict(const sa_plugin_evict_args &a, const Summary &s) {
  const int64_t over = int64_t(s.occupied) - (a.budget - a.incoming);
  return over > 0 ? over : 0;
}
__host__ __device__ int64_t to_take(const sa_plugin_evict_args &a, const Summary &s) {
  return int64_t(s.empty) < a.incoming ? int64_t(s.empty) : a.incoming;
}

// Row blockIdx.y of freed = that head's first `take` empty slots, then its first `evict`
// evictable ones (orders: a row of n slots per head), unless some head's evictable slots fall
// short (the host reports it): then nothing is written for any head.
__global__ void write_kernel(const sa_plugin_evict_args a, const Summary *sum, int64_t heads, const int32_t *orders,
                             int64_t order_stride) {
  for (int64_t g = 0; g < heads; ++g)
    if (int64_t(sum[g].evictable) < to_evict(a, sum[g])) return;
  const int64_t h = blockIdx.y, take = to_take(a, sum[h]), evict = to_evict(a, sum[h]), empty = int64_t(sum[h].empty);
  const int32_t *order = orders + h * order_stride;
  int32_t *freed = a.freed + h * a.head_freed_stride;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < take + evict; k += int64_t(gridDim.x) * blockDim.x)
    freed[k * a.freed_stride] = order[k < take ? k : empty + (k - take)];
}

int grid_for(int64_t n) {
  const int64_t g = (n + kBlock - 1) / kBlock;
  return int(g < 1024 ? (g > 0 ? g : 1) : 1024);
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

std::vector<Summary> read_summaries(const Summary *d, int64_t heads, cudaStream_t s) {
  std::vector<Summary> h(static_cast<size_t>(heads));
  check_cuda(cudaMemcpyAsync(h.data(), d, h.size() * sizeof(Summary), cudaMemcpyDeviceToHost, s), "eviction counts copy");
  check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return h;
}

// Head h's request: the single-set one on its rows.
sa_plugin_evict_args head_request(const sa_plugin_evict_args &a, int64_t h) {
  sa_plugin_evict_args r = a;
  r.scores += h * a.head_score_stride;
  r.positions += h * a.head_pos_stride;
  r.freed += h * a.head_freed_stride;
  return r;
}

// `heads` requests (1: the single set; head strides 0). Two waits for the stream: the scans'
// counts and first failures, then the key passes' counts; the sorts of all heads run between
// them, each head's order kept in its own slot array, and the write is enqueued before the
// second wait, gated on the device by every head's counts.
void evict_all(sa_plugin_evict_args &a, int64_t heads) {
  a.refused = SA_PLUGIN_EVICT_OK;
  a.refused_head = 0;
  a.n_freed = 0;
  const int64_t n = a.n;
  if (n == 0 || heads == 0) {
    for (int64_t h = 0; a.n_freed_heads && h < heads; ++h) a.n_freed_heads[h] = 0;
    return;
  }
  DeviceGuard guard(a.device_id);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);

  // Scratch: summaries, scores and two slot orders per head; position keys, score keys and
  // sort space shared by the heads (their passes run one after another on the stream).
  size_t sort_bytes = 0, b2 = 0;
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint64_t *)nullptr, (uint64_t *)nullptr,
                                             (const int32_t *)nullptr, (int32_t *)nullptr, int(n), 0, 64, stream),
             "sort space");
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, b2, (const uint32_t *)nullptr, (uint32_t *)nullptr,
                                             (const int32_t *)nullptr, (int32_t *)nullptr, int(n), 0, 32, stream),
             "sort space");
  sort_bytes = sort_bytes > b2 ? sort_bytes : b2;
  const size_t un = size_t(n), H = size_t(heads), score_row = align256(un * 4), slot_row = align256(un * 4);
  const size_t o_score = align256(H * sizeof(Summary)), o_pk0 = o_score + H * score_row, o_pk1 = o_pk0 + align256(un * 8),
               o_sk0 = o_pk1 + align256(un * 8), o_sk1 = o_sk0 + align256(un * 4), o_slA = o_sk1 + align256(un * 4),
               o_slB = o_slA + H * slot_row, o_sort = o_slB + H * slot_row, total = o_sort + sort_bytes;
  char *base = static_cast<char *>(stream_buffers(a.owner, a.device_id, stream, 0, total).scratch);
  auto *sum = reinterpret_cast<Summary *>(base);
  auto *pk0 = reinterpret_cast<uint64_t *>(base + o_pk0), *pk1 = reinterpret_cast<uint64_t *>(base + o_pk1);
  auto *sk0 = reinterpret_cast<uint32_t *>(base + o_sk0), *sk1 = reinterpret_cast<uint32_t *>(base + o_sk1);
  void *sort_space = base + o_sort;
  auto score_of = [&](int64_t h) { return reinterpret_cast<float *>(base + o_score + size_t(h) * score_row); };
  auto slots_a = [&](int64_t h) { return reinterpret_cast<int32_t *>(base + o_slA + size_t(h) * slot_row); };
  auto slots_b = [&](int64_t h) { return reinterpret_cast<int32_t *>(base + o_slB + size_t(h) * slot_row); };

  check_cuda(cudaMemsetAsync(sum, 0, H * sizeof(Summary), stream), "eviction counts reset");
  for (int64_t h = 0; h < heads; ++h) {
    scan_kernel<<<grid_for(n), kBlock, 0, stream>>>(head_request(a, h), score_of(h), sum + h);
    check_cuda(cudaGetLastError(), "eviction scan launch");
  }
  const std::vector<Summary> first = read_summaries(sum, heads, stream);
  // The first head whose scan failed: the heads before it are chosen (and may fail) first.
  int64_t scanned_bad = heads;
  for (int64_t h = 0; h < heads && scanned_bad == heads; ++h)
    if (first[size_t(h)].first_bad_position || first[size_t(h)].first_nan) scanned_bad = h;

  bool all_fit = true;
  for (int64_t h = 0; h < scanned_bad; ++h) {
    const sa_plugin_evict_args r = head_request(a, h);
    const Summary &f = first[size_t(h)];
    const int64_t evict = to_evict(a, f), take = to_take(a, f);
    all_fit &= take + evict <= a.freed_cap;
    // Every order ends in slots_a(h): by position (stable: slot order within a position), then
    // by score (stable again); or, with nothing to evict, empty slots (key 0) first.
    keys_kernel<<<grid_for(n), kBlock, 0, stream>>>(r, score_of(h), sum + h, evict == 0, pk0, sk0,
                                                    evict > 0 ? slots_a(h) : slots_b(h));
    check_cuda(cudaGetLastError(), "eviction keys launch");
    if (take + evict == 0) continue;
    size_t bytes = sort_bytes;
    if (evict > 0) {
      int bits = 1;
      while (bits < 63 && (int64_t(1) << bits) <= int64_t(f.max_pos_plus1)) ++bits;
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, pk0, pk1, slots_a(h), slots_b(h), int(n), 0, bits,
                                                 stream), "position sort");
      gather_kernel<<<grid_for(n), kBlock, 0, stream>>>(sk0, slots_b(h), n, sk1);
      check_cuda(cudaGetLastError(), "eviction gather launch");
      bytes = sort_bytes;
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, sk1, sk0, slots_b(h), slots_a(h), int(n), 0, 32,
                                                 stream), "score sort");
    } else {
      check_cuda(cub::DeviceRadixSort::SortPairs(sort_space, bytes, sk0, sk1, slots_b(h), slots_a(h), int(n), 0, 1,
                                                 stream), "empty slot sort");
    }
  }
  if (scanned_bad == heads && all_fit) {
    write_kernel<<<dim3(unsigned(grid_for(n)), unsigned(heads)), kBlock, 0, stream>>>(a, sum, heads, slots_a(0),
                                                                                      int64_t(slot_row / 4));
    check_cuda(cudaGetLastError(), "eviction write launch");
  }
  const std::vector<Summary> last = read_summaries(sum, heads, stream);
  for (int64_t h = 0; h < heads; ++h) {
    a.refused_head = h;
    const Summary &f = first[size_t(h)];
    if (h == scanned_bad) {
      if (f.first_bad_position) {
        a.refused = SA_PLUGIN_EVICT_POSITION;
        a.refused_slot = n - int64_t(f.first_bad_position);
        check_cuda(cudaMemcpy(&a.refused_value, head_request(a, h).positions + a.refused_slot * a.pos_stride,
                              sizeof(int64_t), cudaMemcpyDeviceToHost), "position copy");
      } else {
        const int64_t key = 2 * n - int64_t(f.first_nan);
        a.refused = key % 2 ? SA_PLUGIN_EVICT_NAN_SUMMED : SA_PLUGIN_EVICT_NAN;
        a.refused_slot = key / 2;
      }
      return;
    }
    const int64_t evict = to_evict(a, f), take = to_take(a, f);
    if (int64_t(last[size_t(h)].evictable) < evict) {
      a.refused = SA_PLUGIN_EVICT_BUDGET;
      a.refused_value = int64_t(last[size_t(h)].protected_count);
      return;
    }
    if (take + evict > a.freed_cap) {
      a.refused = SA_PLUGIN_EVICT_FREED_SHORT;
      a.refused_value = take + evict;
      return;
    }
  }
  a.refused_head = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t count = to_take(a, first[size_t(h)]) + to_evict(a, first[size_t(h)]);
    if (a.n_freed_heads) a.n_freed_heads[h] = count;
    a.n_freed += count;
  }
}

}  // namespace

void evict(sa_plugin_evict_args &a) {
  // A core built before the per-head fields passes a shorter struct: read only what it has.
  sa_plugin_evict_args one{};
  std::memcpy(&one, &a, a.struct_size < sizeof one ? a.struct_size : sizeof one);
  one.heads = 1;
  one.head_score_stride = one.head_pos_stride = one.head_freed_stride = 0;
  one.n_freed_heads = nullptr;
  evict_all(one, 1);
  a.refused = one.refused;
  a.refused_slot = one.refused_slot;
  a.refused_value = one.refused_value;
  a.n_freed = one.n_freed;
}

void evict_heads(sa_plugin_evict_args &a) {
  if (a.struct_size < offsetof(sa_plugin_evict_args, refused_head) + sizeof a.refused_head)
    fail(SA_ERR_INVALID_ARGUMENT, "per-head eviction arguments of %zu bytes (an older core)", a.struct_size);
  if (a.heads < 1 || a.rows != 1 || !a.n_freed_heads)
    fail(SA_ERR_INVALID_ARGUMENT, "per-head eviction takes heads >= 1, one score row each and n_freed_heads");
  evict_all(a, a.heads);
}

}  // namespace sacuda
