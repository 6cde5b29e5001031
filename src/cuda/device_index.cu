// The device index's storage: create, grow, append (with the page bounds of touched pages),
// update (refill slots with keys and positions).
#include "device_index.hpp"
#include "half_vec.cuh"
#include "plugin_state.hpp"

#include <new>

namespace sacuda {
namespace {

// Update: keys [n, H, D] -> store[h][slots[s]][d]; positions[slots[s]] = pos[s].
template <class T>
__global__ void refill_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t n, int H,
                              int D, const int32_t *slots, const int64_t *pos, uint16_t *dst, int64_t capacity,
                              int64_t *positions) {
  const int64_t total = n * H * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = e / (int64_t(H) * D), h = (e / D) % H, d = e % D;
    const float f = load_any(src, s * s0 + h * s1 + d * s2, src_dtype);
    dst[(h * capacity + slots[s]) * D + d] = T::from(f);
    if (h == 0 && d == 0) positions[slots[s]] = pos[s];
  }
}

// positions[first + s] = start + s for s < n.
__global__ void count_positions_kernel(int64_t *positions, int64_t first, int64_t n, int64_t start) {
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < n; s += int64_t(gridDim.x) * blockDim.x)
    positions[first + s] = start + s;
}

// An append in one launch: keys [n, H, D] go to store[h][size + s][d] and, for the page
// selector, each touched page's min and max are folded over its new keys only, starting from
// its stored bounds when it already held keys. The fold runs in slot order with strict
// comparisons, as a fold over the whole page would: the stored bounds are the same values.
// One thread per (touched page, head, dimension); P == 1 without bounds (exact selector).
template <class T>
__global__ void append_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t n, int H,
                              int D, int P, uint16_t *dst, int64_t capacity, int64_t size, uint16_t *pmin,
                              uint16_t *pmax, int64_t page_capacity, int64_t *positions, int64_t start) {
  const int64_t p0 = size / P, p1 = (size + n + P - 1) / P;
  const int64_t total = (p1 - p0) * H * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pg = p0 + e / (int64_t(H) * D), h = (e / D) % H, d = e % D;
    const int64_t first = pg * P > size ? pg * P : size, last = (pg + 1) * P < size + n ? (pg + 1) * P : size + n;
    const bool bounds = pmin != nullptr, held = pg * P < size;
    const int64_t b = (h * page_capacity + pg) * D + d;
    uint16_t blo = 0, bhi = 0;
    float lo = INFINITY, hi = -INFINITY;
    if (bounds && held) {
      blo = pmin[b];
      bhi = pmax[b];
      lo = T::one(blo);
      hi = T::one(bhi);
    }
    for (int64_t s = first; s < last; ++s) {
      const uint16_t v = T::from(load_any(src, (s - size) * s0 + h * s1 + d * s2, src_dtype));
      dst[(h * capacity + s) * D + d] = v;
      const float f = T::one(v);
      if (f < lo) { lo = f; blo = v; }
      if (f > hi) { hi = f; bhi = v; }
      if (positions && h == 0 && d == 0) positions[s] = start + (s - size);
    }
    if (bounds) {
      pmin[b] = blo;
      pmax[b] = bhi;
    }
  }
}

// Moves per-head rows [heads][old_cap][row] into [heads][new_cap][row].
void *regrow(void *old, int64_t old_cap, int64_t new_cap, int64_t used, int heads, size_t row_bytes, cudaStream_t s) {
  void *fresh = nullptr;
  check_cuda(cudaMallocAsync(&fresh, size_t(heads) * size_t(new_cap) * row_bytes, s), "index storage allocation");
  if (old && used > 0)
    check_cuda(cudaMemcpy2DAsync(fresh, size_t(new_cap) * row_bytes, old, size_t(old_cap) * row_bytes,
                                 size_t(used) * row_bytes, size_t(heads), cudaMemcpyDeviceToDevice, s),
               "index storage copy");
  if (old) check_cuda(cudaFreeAsync(old, s), "index storage release");
  return fresh;
}

int grid_for(int64_t total) {
  int64_t g = (total + 255) / 256;
  return int(g < 4096 ? (g > 0 ? g : 1) : 4096);
}

}  // namespace

sa_plugin_index *index_create(const sa_plugin_index_args &a) {
  if (a.kind != SA_SELECTOR_EXACT && a.kind != SA_SELECTOR_PAGE)
    fail(SA_ERR_UNSUPPORTED, "selector kind %d has no CUDA implementation (exact and page have)", int(a.kind));
  if (!is_half_type(a.dtype))
    fail(SA_ERR_UNSUPPORTED, "a CUDA index stores keys as f16 or bf16 (opt->dtype)");
  if (a.kind == SA_SELECTOR_PAGE && a.refine)
    fail(SA_ERR_UNSUPPORTED, "the CUDA page selector keeps whole pages: set opt->page.refine = 0");
  if (a.head_dim != 64 && a.head_dim != 128 && a.head_dim != 256)
    fail(SA_ERR_UNSUPPORTED, "head dimension %d; the CUDA selectors take 64, 128 or 256", int(a.head_dim));
  DeviceGuard guard(a.device_id);
  cudaEvent_t appended = nullptr;
  check_cuda(cudaEventCreateWithFlags(&appended, cudaEventDisableTiming), "cudaEventCreate");
  auto *ix = new (std::nothrow) sa_plugin_index();
  if (!ix) {
    cudaEventDestroy(appended);
    fail(SA_ERR_OUT_OF_MEMORY, "out of host memory");
  }
  ix->appended = appended;
  ix->kind = a.kind;
  ix->heads = a.num_kv_heads;
  ix->dim = a.head_dim;
  ix->page = a.kind == SA_SELECTOR_PAGE ? a.page_size : 1;
  ix->dtype = a.dtype;
  ix->device = a.device_id;
  ix->stream = static_cast<cudaStream_t>(a.stream);
  ix->capacity = 0;
  return ix;
}

// Best effort: destroy reports nothing, so a failure (a context already lost) only leaks, and
// the error is cleared so that it does not surface in the host's next CUDA call.
void index_destroy(sa_plugin_index *ix) {
  if (!ix) return;
  int saved = -1;
  const bool have_saved = cudaGetDevice(&saved) == cudaSuccess;
  if (cudaSetDevice(ix->device) == cudaSuccess) {
    // Work that reads the storage may still be queued, on the append stream or (after the
    // event) on others: the device-wide cudaFree below waits for it.
    cudaStreamSynchronize(ix->stream);
    cudaFree(ix->keys);
    cudaFree(ix->page_min);
    cudaFree(ix->page_max);
    cudaFree(ix->positions);
    cudaFree(ix->stage_slots);
    cudaFree(ix->stage_positions);
    cudaEventDestroy(ix->appended);
  }
  cudaGetLastError();
  if (have_saved) cudaSetDevice(saved);
  delete ix;
}

void index_append(sa_plugin_index &ix, const sa_tensor &keys) {
  DeviceGuard guard(ix.device);
  const int64_t n = keys.shape[0], H = ix.heads, D = ix.dim, P = ix.page;
  const size_t es = 2, row = size_t(D) * es;
  if (ix.size + n > ix.capacity) {
    int64_t cap = ix.capacity ? ix.capacity * 2 : 4096;
    while (cap < ix.size + n) cap *= 2;
    cap = (cap + P - 1) / P * P;  // whole pages
    ix.keys = regrow(ix.keys, ix.capacity, cap, ix.size, int(H), row, ix.stream);
    if (ix.kind == SA_SELECTOR_PAGE) {
      const int64_t used_pages = (ix.size + P - 1) / P;
      ix.page_min = regrow(ix.page_min, ix.capacity / P, cap / P, used_pages, int(H), row, ix.stream);
      ix.page_max = regrow(ix.page_max, ix.capacity / P, cap / P, used_pages, int(H), row, ix.stream);
    }
    if (ix.positions)
      ix.positions = static_cast<int64_t *>(regrow(ix.positions, ix.capacity, cap, ix.size, 1, sizeof(int64_t), ix.stream));
    ix.capacity = cap;
  }
  const bool page = ix.kind == SA_SELECTOR_PAGE;
  const int64_t P1 = page ? P : 1, touched = (ix.size + n + P1 - 1) / P1 - ix.size / P1;
  const int grid = grid_for(touched * H * D);
  auto *dst = static_cast<uint16_t *>(ix.keys);
  auto *lo = page ? static_cast<uint16_t *>(ix.page_min) : nullptr, *hi = page ? static_cast<uint16_t *>(ix.page_max) : nullptr;
  auto kernel = ix.dtype == SA_DTYPE_F16 ? append_kernel<F16> : append_kernel<BF16>;
  kernel<<<grid, 256, 0, ix.stream>>>(keys.data, keys.dtype, keys.strides[0], keys.strides[1], keys.strides[2], n,
                                      int(H), int(D), int(P1), dst, ix.capacity, ix.size, lo, hi, ix.capacity / P1,
                                      ix.positions, ix.next_position);
  check_cuda(cudaGetLastError(), "append launch");
  ix.next_position += n;
  check_cuda(cudaEventRecord(ix.appended, ix.stream), "append event record");
  ix.size += n;
}

// Slots and positions go through staging buffers on the index's stream: a copy from pageable
// host memory returns once the values are staged, so the caller's arrays are free afterwards.
void index_update(sa_plugin_index &ix, const sa_plugin_update_args &a) {
  if (ix.kind != SA_SELECTOR_EXACT)
    fail(SA_ERR_UNSUPPORTED, "the CUDA page selector keeps the bounds of appended pages only; sa_index_update takes "
                             "exact indexes on the device");
  const int64_t n = a.n, H = ix.heads, D = ix.dim;
  if (n == 0) return;
  DeviceGuard guard(ix.device);
  if (!ix.positions) {  // from now on positions are kept: slot s held position s so far
    void *p = nullptr;
    check_cuda(cudaMallocAsync(&p, size_t(ix.capacity) * sizeof(int64_t), ix.stream), "positions allocation");
    ix.positions = static_cast<int64_t *>(p);
    count_positions_kernel<<<grid_for(ix.size), 256, 0, ix.stream>>>(ix.positions, 0, ix.size, 0);
    check_cuda(cudaGetLastError(), "positions launch");
  }
  if (ix.staged < n) {
    void *sl = nullptr, *po = nullptr;
    const cudaError_t e1 = cudaMallocAsync(&sl, size_t(n) * sizeof(int32_t), ix.stream);
    const cudaError_t e2 = e1 == cudaSuccess ? cudaMallocAsync(&po, size_t(n) * sizeof(int64_t), ix.stream) : e1;
    if (e2 != cudaSuccess && sl) cudaFreeAsync(sl, ix.stream);
    check_cuda(e2, "update staging allocation");
    if (ix.stage_slots) cudaFreeAsync(ix.stage_slots, ix.stream);
    if (ix.stage_positions) cudaFreeAsync(ix.stage_positions, ix.stream);
    ix.stage_slots = static_cast<int32_t *>(sl);
    ix.stage_positions = static_cast<int64_t *>(po);
    ix.staged = n;
  }
  check_cuda(cudaMemcpyAsync(ix.stage_slots, a.slots, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, ix.stream),
             "update slots copy");
  check_cuda(cudaMemcpyAsync(ix.stage_positions, a.positions, size_t(n) * sizeof(int64_t), cudaMemcpyHostToDevice,
                             ix.stream), "update positions copy");
  const sa_tensor &keys = *a.keys;
  const int64_t total = n * H * D;
  auto *dst = static_cast<uint16_t *>(ix.keys);
  if (ix.dtype == SA_DTYPE_F16)
    refill_kernel<F16><<<grid_for(total), 256, 0, ix.stream>>>(keys.data, keys.dtype, keys.strides[0], keys.strides[1],
        keys.strides[2], n, int(H), int(D), ix.stage_slots, ix.stage_positions, dst, ix.capacity, ix.positions);
  else
    refill_kernel<BF16><<<grid_for(total), 256, 0, ix.stream>>>(keys.data, keys.dtype, keys.strides[0], keys.strides[1],
        keys.strides[2], n, int(H), int(D), ix.stage_slots, ix.stage_positions, dst, ix.capacity, ix.positions);
  check_cuda(cudaGetLastError(), "refill launch");
  check_cuda(cudaEventRecord(ix.appended, ix.stream), "update event record");
  ix.next_position = a.next_position;
}

}  // namespace sacuda
