// An index on a CUDA device, all in device memory: for the exact selector the keys per KV head
// contiguous [slot][D] in f16/bf16 (none when it borrows the host's keys: each selection then
// reads the K it is given); for the page selector each page's compact bound only, the CPU
// page selector's very codes (select/page_code.hpp: per page and KV head one int8 row
// [centre | radius] of 2 D codes and an f32 scale and magnitude; 2 D + 8 bytes against the
// 4 D of an f16 min and max, 132 bytes a token at 8 KV heads x 128 dims and page_size 16), and
// the exact f32 min and max of its last page while that page is partial, so that appends
// quantize every touched page from its keys' exact bounds, as the CPU does. Its selection reads
// nothing else, so it keeps no keys. Slot s holds position s until the first update; from then
// on each slot's position is kept on the device too (one row for every head; a row per KV head
// once sa_index_update_heads is used), the page selector also keeps each page's smallest and
// largest position per row, and appends continue from next_position. The page selector keeps
// no keys, so a refill widens its page's bound to the new key: the decoded bound s (c -+ r)
// (exact in double) widened and quantized again, still an upper bound of the page's keys and
// never tightened (the partial last page widens its exact min and max instead). All of it
// comes from the DeviceMemory of the index's context and goes back to it at index_destroy.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "device_memory.hpp"
#include "sparseattn_plugin.h"

struct sa_plugin_index {
  sa_selector_kind kind = SA_SELECTOR_EXACT;
  int heads = 0, dim = 0, page = 1;
  sa_dtype dtype = SA_DTYPE_BF16;
  bool borrow = false;  // exact selector without keys: selections read sa_plugin_select_args.keys
  int device = 0;
  cudaStream_t stream = nullptr;  // appends
  // Recorded on `stream` after each append: selections on other streams wait for it.
  cudaEvent_t appended = nullptr;
  sacuda::DeviceMemory memory;
  int64_t hint = 0;  // capacity the first append allocates (at least)
  // Set by a selection on another stream than `stream`: growing must then wait for the device
  // before the outgrown storage goes back (that selection may still be reading it).
  mutable std::atomic<bool> read_elsewhere{false};
  int64_t size = 0, capacity = 0;
  void *keys = nullptr;                      // [heads][capacity][dim]; exact selector, not borrowing
  int8_t *page_codes = nullptr;   // [heads][capacity / page][2 dim]: [centre | radius]
  float2 *page_scales = nullptr;  // [heads][capacity / page]: (scale, magnitude)
  // The partial last page's exact bounds, f32 [2][2][heads][dim] (slot, min / max): an append
  // reads slot open_slot and writes the other (blocks of different pages never share one).
  float *open_bounds = nullptr;
  int open_slot = 0;
  // [position_rows][capacity] once updated; null: slot s holds position s. position_rows: 1
  // (one position for every KV head) or heads (after a per-head update).
  int64_t *positions = nullptr;
  int position_rows = 1;
  // Page selector with positions: each page's smallest and largest position,
  // [position_rows][capacity / page] each.
  int64_t *page_min_pos = nullptr, *page_max_pos = nullptr;
  int64_t next_position = 0;     // of the next appended key
  // An update's slots and positions, copied from the host: [staged] positions, stage_words(ix, staged)
  // int32 words for the slots and the page groups.
  int32_t *stage_slots = nullptr;
  int64_t *stage_positions = nullptr;
  int64_t staged = 0;  // capacity of the staging buffers, in entries; grown by doubling
};

namespace sacuda {

sa_plugin_index *index_create(const sa_plugin_index_args &a);
void index_destroy(sa_plugin_index *ix);
void index_append(sa_plugin_index &ix, const sa_tensor &keys);
void index_update(sa_plugin_index &ix, const sa_plugin_update_args &a);
void index_update_heads(sa_plugin_index &ix, const sa_plugin_update_args &a);
// with_keys: a reads sa_plugin_select_args.keys and per_query_head (the select_keys entry).
void index_select(const sa_plugin_index &ix, const sa_plugin_select_args &a, bool with_keys);
// sa_select_batch in a few launches for the whole batch; false (nothing queued) when it does
// not serve the request.
bool index_select_batch(const sa_plugin_select_batch_args &a);

}  // namespace sacuda
