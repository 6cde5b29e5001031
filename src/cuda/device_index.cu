// The device index's storage: create, grow, append (with the page bounds of touched pages),
// update (refill slots with keys and positions, widening the page bounds of refilled slots).
#include "device_index.hpp"
#include "half_vec.cuh"
#include "page_code.cuh"
#include "plugin_state.hpp"

#include <algorithm>
#include <new>
#include <vector>

namespace sacuda {
namespace {

// Update: key row s of head h goes to slot slots[h * slot_stride + s] of head h (slot_stride 0:
// the same slot in every head) at position pos[h * pos_stride + s], written into every row
// of positions below rows (one row, or one per head). dst null: no keys kept (page selector).
template <class T>
__global__ void refill_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t n, int H,
                              int D, const int32_t *slots, int64_t slot_stride, const int64_t *pos,
                              int64_t pos_stride, uint16_t *dst, int64_t capacity, int64_t *positions, int rows) {
  const int64_t total = n * H * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = e / (int64_t(H) * D), h = (e / D) % H, d = e % D;
    const int64_t slot = slots[h * slot_stride + s];
    if (dst) dst[(h * capacity + slot) * D + d] = T::from(load_any(src, s * s0 + h * s1 + d * s2, src_dtype));
    if (d == 0 && h < rows) positions[h * capacity + slot] = pos[h * pos_stride + s];
  }
}

// The page selector keeps no keys: a refilled slot's page bound is widened to its new keys. One
// block per (page touched, head), one thread per dimension: the host groups the entries by page
// (refill_groups), so that no two blocks write one page and each entry is read once. Group g's
// entries are order[begin[g] .. begin[g + 1]), global entry numbers (set * n + key row; a set
// per head, or one for every head: then blockIdx.y is the head). The page's lo and hi: the
// partial last page's exact f32 min and max (kept widened too), any other page's decoded bound
// s (c - r), s (c + r), exact in double.
template <class T>
__global__ void widen_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t n, int H,
                             int P, const int32_t *slots, const int32_t *order, const int32_t *begin, bool per_head,
                             int8_t *codes, float2 *scales, int64_t page_capacity, float *open, int64_t open_page) {
  const int64_t g = blockIdx.x, first = begin[g], last = begin[g + 1];
  const int64_t set = order[first] / n;
  const int h = per_head ? int(set) : int(blockIdx.y), d = threadIdx.x, D = blockDim.x;
  const int64_t page = slots[order[first]] / P;
  const int64_t b = h * page_capacity + page;
  int8_t *row = codes + b * 2 * D;
  double lo, hi;
  if (page == open_page) {
    lo = open[h * D + d];
    hi = open[(H + h) * D + d];
  } else {
    const double sc = scales[b].x, c = row[d], r = row[D + d];
    lo = sc * (c - r);
    hi = sc * (c + r);
  }
  for (int64_t x = first; x < last; ++x) {
    const int64_t key_row = order[x] - set * n;
    const float f = T::one(T::from(load_any(src, key_row * s0 + h * s1 + d * s2, src_dtype)));
    if (f < lo) lo = f;
    if (f > hi) hi = f;
  }
  if (page == open_page) {
    open[h * D + d] = float(lo);
    open[(H + h) * D + d] = float(hi);
  }
  __syncthreads();  // every thread has read the page's scale before it is written
  quantize_page_block(lo, hi, row, scales + b);
}

// Each row's positions[r][first + s] = start + s for s < n (slot s held position s so far).
__global__ void count_positions_kernel(int64_t *positions, int64_t capacity, int rows, int64_t first, int64_t n,
                                       int64_t start) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * rows; e += int64_t(gridDim.x) * blockDim.x)
    positions[(e / n) * capacity + first + e % n] = start + e % n;
}

// The position range of pages, per row: page slots[r * slot_stride + i] / P for i < count
// (slots null: page first_page + i), its smallest and largest position among its slots below
// size. Pages listed twice get the same values from the same positions.
__global__ void page_ranges_kernel(const int64_t *positions, int64_t capacity, int rows, int P, int64_t size,
                                   const int32_t *slots, int64_t slot_stride, int64_t first_page, int64_t count,
                                   int64_t *min_pos, int64_t *max_pos, int64_t page_capacity) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count * rows;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / count, i = e % count;
    const int64_t page = slots ? slots[r * slot_stride + i] / P : first_page + i;
    const int64_t *row = positions + r * capacity;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t s = page * P; s < (page + 1) * P && s < size; ++s) {
      lo = row[s] < lo ? row[s] : lo;
      hi = row[s] > hi ? row[s] : hi;
    }
    min_pos[r * page_capacity + page] = lo;
    max_pos[r * page_capacity + page] = hi;
  }
}

// An exact index's append: keys [n, H, D] go to store[h][size + s][d], and their positions to
// every row of positions (once kept). One thread per (slot, head, dimension); dst null for a
// borrowing index (positions only). I: the type of the thread numbers (int whenever the total
// fits: 64-bit divisions cost more than the rest of a decode step's append).
template <class T, class I>
__global__ void key_append_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int H, int D,
                                  uint16_t *dst, int64_t capacity, int64_t size, I total, int64_t *positions, int rows,
                                  int64_t start) {
  const I hd = I(H) * D;
  for (I e = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); e < total; e += I(gridDim.x) * I(blockDim.x)) {
    const int64_t s = int64_t(e / hd);
    const int h = int(e / D % H), d = int(e % D);
    if (dst) dst[(h * capacity + size + s) * D + d] = T::from(load_any(src, s * s0 + h * s1 + d * s2, src_dtype));
    if (positions && h < rows && d == 0) positions[h * capacity + size + s] = start + s;
  }
}

// A page index's append in one launch: one block per (touched page, head), one thread per
// dimension. The page's exact min and max over its keys as held in the index dtype (a partial
// first page starts from its kept f32 min and max: open slot `in`), folded in slot order with
// strict comparisons as the CPU's refresh folds them (a NaN is passed over), then quantized
// (quantize_page_block); a page left partial keeps its min and max in open slot 1 - in.
// Positions of the new slots go to every row of positions (once kept).
template <class T>
__global__ void page_append_kernel(const void *src, int src_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t n,
                                   int H, int P, int64_t size, int8_t *codes, float2 *scales, int64_t page_capacity,
                                   float *open, int in, int64_t *positions, int64_t capacity, int rows,
                                   int64_t start) {
  const int64_t pg = size / P + blockIdx.x;
  const int h = blockIdx.y, d = threadIdx.x, D = blockDim.x;
  const int64_t first = pg * P > size ? pg * P : size, last = (pg + 1) * P < size + n ? (pg + 1) * P : size + n;
  const bool held = pg * P < size;  // the partial page: its keys so far
  float lo = held ? open[(in * 2 * H + h) * D + d] : INFINITY;
  float hi = held ? open[(in * 2 * H + H + h) * D + d] : -INFINITY;
  for (int64_t s = first; s < last; ++s) {
    const float f = T::one(T::from(load_any(src, (s - size) * s0 + h * s1 + d * s2, src_dtype)));
    if (f < lo) lo = f;
    if (f > hi) hi = f;
    if (positions && h < rows && d == 0) positions[h * capacity + s] = start + (s - size);
  }
  if (last % P != 0) {  // still partial: the next append starts from these
    open[((1 - in) * 2 * H + h) * D + d] = lo;
    open[((1 - in) * 2 * H + H + h) * D + d] = hi;
  }
  const int64_t b = h * page_capacity + pg;
  quantize_page_block(lo, hi, codes + b * 2 * D, scales + b);
}

// Copies the first `used` of each head's rows [heads][old_cap][row] into [heads][new_cap][row].
void copy_rows(void *fresh, int64_t new_cap, const void *old, int64_t old_cap, int64_t used, int heads,
               size_t row_bytes, cudaStream_t s) {
  if (!old || used <= 0) return;
  check_cuda(cudaMemcpy2DAsync(fresh, size_t(new_cap) * row_bytes, old, size_t(old_cap) * row_bytes,
                               size_t(used) * row_bytes, size_t(heads), cudaMemcpyDeviceToDevice, s),
             "index storage copy");
}

// What an index keeps on the device, and its size at a capacity.
struct Storage {
  void *keys = nullptr;
  int8_t *page_codes = nullptr;
  float2 *page_scales = nullptr;
  int64_t *positions = nullptr, *page_min_pos = nullptr, *page_max_pos = nullptr;
};
size_t key_bytes(const sa_plugin_index &ix, int64_t cap) { return size_t(ix.heads) * size_t(cap) * size_t(ix.dim) * 2; }
size_t code_bytes(const sa_plugin_index &ix, int64_t cap) { return key_bytes(ix, cap / ix.page); }  // 2 D int8
size_t scale_bytes(const sa_plugin_index &ix, int64_t cap) { return size_t(ix.heads) * size_t(cap / ix.page) * sizeof(float2); }
size_t open_bytes(const sa_plugin_index &ix) { return size_t(4) * size_t(ix.heads) * size_t(ix.dim) * sizeof(float); }
size_t position_bytes(int rows, int64_t cap) { return size_t(rows) * size_t(cap) * sizeof(int64_t); }
size_t range_bytes(const sa_plugin_index &ix, int rows, int64_t cap) { return position_bytes(rows, cap / ix.page); }
// int32 words of the update staging for `entries`: the slots, then (page selector) the entries
// grouped by page and the groups' starts (refill_groups).
size_t stage_words(const sa_plugin_index &ix, int64_t entries) {
  return ix.kind == SA_SELECTOR_PAGE ? size_t(entries) * 3 + 1 : size_t(entries);
}

void release_storage(const sa_plugin_index &ix, const Storage &st, int64_t cap, cudaStream_t stream) noexcept {
  ix.memory.release(st.keys, key_bytes(ix, cap), ix.device, stream);
  ix.memory.release(st.page_codes, code_bytes(ix, cap), ix.device, stream);
  ix.memory.release(st.page_scales, scale_bytes(ix, cap), ix.device, stream);
  ix.memory.release(st.positions, position_bytes(ix.position_rows, cap), ix.device, stream);
  ix.memory.release(st.page_min_pos, range_bytes(ix, ix.position_rows, cap), ix.device, stream);
  ix.memory.release(st.page_max_pos, range_bytes(ix, ix.position_rows, cap), ix.device, stream);
}

int64_t *allocate_i64(const sa_plugin_index &ix, size_t bytes, const char *what) {
  return static_cast<int64_t *>(ix.memory.allocate(bytes, ix.device, ix.stream, what));
}

// Moves the index into storage for cap slots. All of it is allocated and the copies enqueued
// before the old storage goes back, so a failure leaves the index as it was. The old storage
// is released on the index's stream, after the copies; selections enqueued on other streams
// may still read it, so the device is waited for first when there were any.
void grow_storage(sa_plugin_index &ix, int64_t cap) {
  const int64_t max_cap = int64_t((uint64_t(1) << 62) / (uint64_t(ix.heads) * uint64_t(ix.dim) * 2));
  if (cap > max_cap) fail(SA_ERR_OUT_OF_MEMORY, "an index of %lld slots does not fit in memory", (long long)cap);
  const bool page = ix.kind == SA_SELECTOR_PAGE;
  const int P = ix.page, H = ix.heads;
  const size_t row = size_t(ix.dim) * 2;
  Storage fresh;
  float *open = nullptr;  // the page selector's partial-page bounds, allocated with its first storage
  try {
    if (page && !ix.open_bounds)
      open = static_cast<float *>(ix.memory.allocate(open_bytes(ix), ix.device, ix.stream, "index storage allocation"));
    if (!page && !ix.borrow)
      fresh.keys = ix.memory.allocate(key_bytes(ix, cap), ix.device, ix.stream, "index storage allocation");
    if (page) {
      fresh.page_codes = static_cast<int8_t *>(
          ix.memory.allocate(code_bytes(ix, cap), ix.device, ix.stream, "index storage allocation"));
      fresh.page_scales = static_cast<float2 *>(
          ix.memory.allocate(scale_bytes(ix, cap), ix.device, ix.stream, "index storage allocation"));
    }
    const int rows = ix.position_rows;
    if (ix.positions) fresh.positions = allocate_i64(ix, position_bytes(rows, cap), "index storage allocation");
    if (ix.page_min_pos) {
      fresh.page_min_pos = allocate_i64(ix, range_bytes(ix, rows, cap), "index storage allocation");
      fresh.page_max_pos = allocate_i64(ix, range_bytes(ix, rows, cap), "index storage allocation");
    }
    copy_rows(fresh.keys, cap, ix.keys, ix.capacity, ix.size, H, row, ix.stream);
    if (page) {
      const int64_t used_pages = (ix.size + P - 1) / P;
      copy_rows(fresh.page_codes, cap / P, ix.page_codes, ix.capacity / P, used_pages, H, row, ix.stream);
      copy_rows(fresh.page_scales, cap / P, ix.page_scales, ix.capacity / P, used_pages, H, sizeof(float2), ix.stream);
    }
    copy_rows(fresh.positions, cap, ix.positions, ix.capacity, ix.size, rows, sizeof(int64_t), ix.stream);
    if (ix.page_min_pos) {
      const int64_t used_pages = (ix.size + P - 1) / P;
      copy_rows(fresh.page_min_pos, cap / P, ix.page_min_pos, ix.capacity / P, used_pages, rows, sizeof(int64_t),
                ix.stream);
      copy_rows(fresh.page_max_pos, cap / P, ix.page_max_pos, ix.capacity / P, used_pages, rows, sizeof(int64_t),
                ix.stream);
    }
    if (ix.capacity && ix.read_elsewhere.load())
      check_cuda(cudaDeviceSynchronize(), "waiting for selections on other streams before the index grows");
  } catch (...) {
    release_storage(ix, fresh, cap, ix.stream);
    ix.memory.release(open, open_bytes(ix), ix.device, ix.stream);
    throw;
  }
  if (open) ix.open_bounds = open;
  ix.read_elsewhere.store(false);
  release_storage(ix, Storage{ix.keys, ix.page_codes, ix.page_scales, ix.positions, ix.page_min_pos, ix.page_max_pos},
                  ix.capacity, ix.stream);
  ix.keys = fresh.keys;
  ix.page_codes = fresh.page_codes;
  ix.page_scales = fresh.page_scales;
  ix.positions = fresh.positions;
  ix.page_min_pos = fresh.page_min_pos;
  ix.page_max_pos = fresh.page_max_pos;
  ix.capacity = cap;
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
  ix->borrow = a.kind == SA_SELECTOR_EXACT &&
               a.struct_size >= offsetof(sa_plugin_index_args, borrow_keys) + sizeof a.borrow_keys && a.borrow_keys;
  ix->device = a.device_id;
  ix->stream = static_cast<cudaStream_t>(a.stream);
  ix->memory = owner_memory(a.struct_size >= offsetof(sa_plugin_index_args, owner) + sizeof a.owner ? a.owner : nullptr);
  ix->hint = a.capacity > 0 ? (a.capacity < (int64_t(1) << 40) ? a.capacity : int64_t(1) << 40) : 0;
  ix->capacity = 0;
  return ix;
}

// Best effort: destroy reports nothing, so a failure (a context already lost) only leaks, and
// the error is cleared so that it does not surface in the host's next CUDA call. Work that
// reads the storage may still be queued, on the append stream or (after the event) on others:
// the device is waited for, and the storage released with no stream.
void index_destroy(sa_plugin_index *ix) {
  if (!ix) return;
  wait_for_device(ix->device);
  release_storage(*ix, Storage{ix->keys, ix->page_codes, ix->page_scales, ix->positions, ix->page_min_pos,
                               ix->page_max_pos},
                  ix->capacity, nullptr);
  ix->memory.release(ix->open_bounds, open_bytes(*ix), ix->device, nullptr);
  ix->memory.release(ix->stage_slots, stage_words(*ix, ix->staged) * sizeof(int32_t), ix->device, nullptr);
  ix->memory.release(ix->stage_positions, size_t(ix->staged) * sizeof(int64_t), ix->device, nullptr);
  int saved = -1;
  const bool have_saved = cudaGetDevice(&saved) == cudaSuccess;
  if (cudaSetDevice(ix->device) == cudaSuccess) cudaEventDestroy(ix->appended);
  cudaGetLastError();
  if (have_saved) cudaSetDevice(saved);
  delete ix;
}

void index_append(sa_plugin_index &ix, const sa_tensor &keys) {
  DeviceGuard guard(ix.device);
  const int64_t n = keys.shape[0], H = ix.heads, D = ix.dim, P = ix.page;
  if (ix.size + n > ix.capacity) {
    int64_t cap = ix.capacity ? ix.capacity * 2 : (ix.hint > 4096 ? ix.hint : 4096);
    while (cap < ix.size + n) cap *= 2;
    grow_storage(ix, (cap + P - 1) / P * P);  // whole pages
  }
  const bool page = ix.kind == SA_SELECTOR_PAGE, f16 = ix.dtype == SA_DTYPE_F16;
  const int64_t touched = page ? (ix.size + n + P - 1) / P - ix.size / P : 0;
  if (page && n > 0) {  // the touched pages' bounds (and the new slots' positions)
    (f16 ? page_append_kernel<F16> : page_append_kernel<BF16>)<<<dim3(unsigned(touched), unsigned(H)), unsigned(D), 0,
                                                                  ix.stream>>>(
        keys.data, keys.dtype, keys.strides[0], keys.strides[1], keys.strides[2], n, int(H), int(P), ix.size,
        ix.page_codes, ix.page_scales, ix.capacity / P, ix.open_bounds, ix.open_slot, ix.positions, ix.capacity,
        ix.position_rows, ix.next_position);
    check_cuda(cudaGetLastError(), "append launch");
  } else if (ix.keys || ix.positions) {  // a borrowing exact index keeps positions only (once updated)
    const int64_t total = n * H * D;
    const int grid = grid_for(total);
    auto *dst = static_cast<uint16_t *>(ix.keys);
    auto launch = [&](auto count) {  // count's type numbers the threads
      using I = decltype(count);
      auto kernel = f16 ? key_append_kernel<F16, I> : key_append_kernel<BF16, I>;
      kernel<<<grid, 256, 0, ix.stream>>>(keys.data, keys.dtype, keys.strides[0], keys.strides[1], keys.strides[2],
                                          int(H), int(D), dst, ix.capacity, ix.size, count, ix.positions,
                                          ix.position_rows, ix.next_position);
    };
    // int while the grid-stride loop's last step stays below INT32_MAX (no signed overflow).
    if (total <= INT32_MAX - int64_t(grid) * 256) launch(int(total));
    else launch(total);
    check_cuda(cudaGetLastError(), "append launch");
  }
  if (ix.page_min_pos) {  // the touched pages' position ranges
    const int64_t p0 = ix.size / P;
    page_ranges_kernel<<<grid_for(touched * ix.position_rows), 256, 0, ix.stream>>>(
        ix.positions, ix.capacity, ix.position_rows, int(P), ix.size + n, nullptr, 0, p0, touched, ix.page_min_pos,
        ix.page_max_pos, ix.capacity / P);
    check_cuda(cudaGetLastError(), "page ranges launch");
  }
  ix.next_position += n;
  check_cuda(cudaEventRecord(ix.appended, ix.stream), "append event record");
  ix.size += n;
  if (page && n > 0) ix.open_slot = 1 - ix.open_slot;  // the kernel left the partial page's bounds there
}

// Before a refill: positions kept from now on (slot s held position s so far), with `rows`
// rows (one, or one per KV head: a single row is then copied into every head's), and for the
// page selector the position ranges of every page (made again when the rows change). The old
// arrays go back once the new ones are filled.
static void keep_positions(sa_plugin_index &ix, int rows) {
  if (ix.positions && ix.position_rows >= rows) return;
  const int64_t cap = ix.capacity, P = ix.page;
  int64_t *fresh = allocate_i64(ix, position_bytes(rows, cap), "positions allocation");
  int64_t *lo = nullptr, *hi = nullptr;
  try {
    if (ix.kind == SA_SELECTOR_PAGE) {
      lo = allocate_i64(ix, range_bytes(ix, rows, cap), "page ranges allocation");
      hi = allocate_i64(ix, range_bytes(ix, rows, cap), "page ranges allocation");
    }
    if (!ix.positions) {
      count_positions_kernel<<<grid_for(ix.size * rows), 256, 0, ix.stream>>>(fresh, cap, rows, 0, ix.size, 0);
      check_cuda(cudaGetLastError(), "positions launch");
    } else {
      for (int r = 0; r < rows; ++r)
        check_cuda(cudaMemcpyAsync(fresh + r * cap, ix.positions, size_t(ix.size) * sizeof(int64_t),
                                   cudaMemcpyDeviceToDevice, ix.stream), "positions copy");
    }
    if (lo) {
      const int64_t pages = (ix.size + P - 1) / P;
      page_ranges_kernel<<<grid_for(pages * rows), 256, 0, ix.stream>>>(fresh, cap, rows, int(P), ix.size, nullptr, 0,
                                                                        0, pages, lo, hi, cap / P);
      check_cuda(cudaGetLastError(), "page ranges launch");
    }
  } catch (...) {
    ix.memory.release(fresh, position_bytes(rows, cap), ix.device, ix.stream);
    ix.memory.release(lo, range_bytes(ix, rows, cap), ix.device, ix.stream);
    ix.memory.release(hi, range_bytes(ix, rows, cap), ix.device, ix.stream);
    throw;
  }
  release_storage(ix, Storage{nullptr, nullptr, nullptr, ix.positions, ix.page_min_pos, ix.page_max_pos}, cap,
                  ix.stream);
  ix.positions = fresh;
  ix.page_min_pos = lo;
  ix.page_max_pos = hi;
  ix.position_rows = rows;
}

// The refill's entries grouped by page for widen_kernel, per set of slots (sets of n entries:
// one per head, or one for every head): order[] lists global entry numbers, each set's
// entries sorted by page (stably); begin[g] is where group g starts in order, begin[groups] =
// the entry count. Returns the group count.
static int64_t refill_groups(const int32_t *slots, int64_t n, int64_t sets, int64_t P, std::vector<int32_t> &order,
                             std::vector<int32_t> &begin) {
  order.resize(size_t(n * sets));
  begin.clear();
  for (int64_t s = 0; s < sets; ++s) {
    int32_t *o = order.data() + s * n;
    for (int64_t i = 0; i < n; ++i) o[i] = int32_t(s * n + i);
    std::stable_sort(o, o + n, [&](int32_t x, int32_t y) { return slots[x] / P < slots[y] / P; });
    for (int64_t i = 0; i < n; ++i)
      if (i == 0 || slots[o[i]] / P != slots[o[i - 1]] / P) begin.push_back(int32_t(s * n + i));
  }
  begin.push_back(int32_t(n * sets));
  return int64_t(begin.size()) - 1;
}

// Slots and positions go through staging buffers on the index's stream: a copy from pageable
// host memory returns once the values are staged, so the caller's arrays are free afterwards.
// per_head: a.slots and a.positions hold H * n values, head h's from h * n.
static void refill(sa_plugin_index &ix, const sa_plugin_update_args &a, bool per_head) {
  const int64_t n = a.n, H = ix.heads, D = ix.dim, P = ix.page;
  if (n == 0) return;
  const int64_t entries = per_head ? n * H : n;
  if (entries >= INT32_MAX / 3)  // staged as int32 words (stage_words), entry numbers included
    fail(SA_ERR_UNSUPPORTED, "an update of %lld entries (slots x heads); at most %d a call", (long long)entries,
         INT32_MAX / 3 - 1);
  DeviceGuard guard(ix.device);
  keep_positions(ix, per_head ? int(H) : 1);
  if (ix.staged < entries) {  // doubled, so that updates of one size allocate once
    int64_t want = ix.staged ? ix.staged * 2 : 256;
    while (want < entries) want *= 2;
    void *sl = ix.memory.allocate(stage_words(ix, want) * sizeof(int32_t), ix.device, ix.stream, "update staging allocation");
    void *po = nullptr;
    try {
      po = ix.memory.allocate(size_t(want) * sizeof(int64_t), ix.device, ix.stream, "update staging allocation");
    } catch (...) {
      ix.memory.release(sl, stage_words(ix, want) * sizeof(int32_t), ix.device, ix.stream);
      throw;
    }
    ix.memory.release(ix.stage_slots, stage_words(ix, ix.staged) * sizeof(int32_t), ix.device, ix.stream);
    ix.memory.release(ix.stage_positions, size_t(ix.staged) * sizeof(int64_t), ix.device, ix.stream);
    ix.stage_slots = static_cast<int32_t *>(sl);
    ix.stage_positions = static_cast<int64_t *>(po);
    ix.staged = want;
  }
  check_cuda(cudaMemcpyAsync(ix.stage_slots, a.slots, size_t(entries) * sizeof(int32_t), cudaMemcpyHostToDevice,
                             ix.stream), "update slots copy");
  check_cuda(cudaMemcpyAsync(ix.stage_positions, a.positions, size_t(entries) * sizeof(int64_t),
                             cudaMemcpyHostToDevice, ix.stream), "update positions copy");
  const sa_tensor &keys = *a.keys;
  const int64_t stride = per_head ? n : 0;  // of a head's slots and positions
  const bool page = ix.kind == SA_SELECTOR_PAGE, f16 = ix.dtype == SA_DTYPE_F16;
  auto *dst = static_cast<uint16_t *>(ix.keys);  // null: no keys kept (page, borrowing exact)
  (f16 ? refill_kernel<F16> : refill_kernel<BF16>)<<<grid_for(n * H * D), 256, 0, ix.stream>>>(
      keys.data, keys.dtype, keys.strides[0], keys.strides[1], keys.strides[2], n, int(H), int(D), ix.stage_slots,
      stride, ix.stage_positions, stride, dst, ix.capacity, ix.positions, ix.position_rows);
  check_cuda(cudaGetLastError(), "refill launch");
  if (page) {
    const int64_t open_page = ix.size % P ? ix.size / P : -1;  // the partial last page, if any
    float *open = ix.open_bounds + size_t(ix.open_slot) * 2 * H * D;
    std::vector<int32_t> order, begin;
    const int64_t groups = refill_groups(a.slots, n, per_head ? H : 1, P, order, begin);
    int32_t *d_order = ix.stage_slots + entries, *d_begin = d_order + entries;
    check_cuda(cudaMemcpyAsync(d_order, order.data(), order.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                               ix.stream), "update page groups copy");
    check_cuda(cudaMemcpyAsync(d_begin, begin.data(), begin.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                               ix.stream), "update page groups copy");
    (f16 ? widen_kernel<F16> : widen_kernel<BF16>)<<<dim3(unsigned(groups), per_head ? 1u : unsigned(H)), unsigned(D),
                                                     0, ix.stream>>>(
        keys.data, keys.dtype, keys.strides[0], keys.strides[1], keys.strides[2], n, int(H), int(P), ix.stage_slots,
        d_order, d_begin, per_head, ix.page_codes, ix.page_scales, ix.capacity / P, open, open_page);
    check_cuda(cudaGetLastError(), "page bounds launch");
    // Every row's ranges of the refilled pages: a single-set refill names its slots once for
    // all rows (slot stride 0).
    page_ranges_kernel<<<grid_for(n * ix.position_rows), 256, 0, ix.stream>>>(
        ix.positions, ix.capacity, ix.position_rows, int(P), ix.size, ix.stage_slots, stride, 0, n, ix.page_min_pos,
        ix.page_max_pos, ix.capacity / P);
    check_cuda(cudaGetLastError(), "page ranges launch");
  }
  check_cuda(cudaEventRecord(ix.appended, ix.stream), "update event record");
  ix.next_position = a.next_position;
}

void index_update(sa_plugin_index &ix, const sa_plugin_update_args &a) { refill(ix, a, false); }
void index_update_heads(sa_plugin_index &ix, const sa_plugin_update_args &a) { refill(ix, a, true); }

}  // namespace sacuda
