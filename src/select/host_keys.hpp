// The host's keys, as an index created with borrow_keys reads them during one selection: where
// the key of slot s and KV head h lives in the host's cache. Contiguous caches ([n, H_kv, D]
// with any token and head strides) and paged ones (vLLM-style pages: slot s in page
// pages[s / page_size] at offset s % page_size) alike; the head dimension is contiguous (the
// api layer packs other layouts into a copy for the call). Nothing is owned: the pointers are
// the host's, valid during the call.
#pragma once

#include <cstdint>

#include "sparseattn.h"

namespace sa {

struct HostKeys {
  const void *data = nullptr;  // element 0 of slot 0 (of page 0 when paged), head 0
  sa_dtype dtype = SA_DTYPE_F32;  // F32, F16 or BF16
  int64_t token_stride = 0;    // elements between consecutive slots (within a page when paged)
  int64_t head_stride = 0;     // elements between KV heads
  // Paged: slot s lives in page pages[s / page_size], at offset s % page_size; pages are
  // page_stride elements apart. nullptr: contiguous, slot s at s * token_stride.
  const int32_t *pages = nullptr;
  int64_t page_size = 0;
  int64_t page_stride = 0;

  size_t elem_bytes() const { return dtype == SA_DTYPE_F32 ? 4 : 2; }
  // Element offset of slot s's row of head h.
  int64_t offset(int h, int64_t slot) const {
    const int64_t in_cache = pages ? int64_t(pages[slot / page_size]) * page_stride + (slot % page_size) * token_stride
                                   : slot * token_stride;
    return in_cache + int64_t(h) * head_stride;
  }
  // The D elements of slot s, KV head h.
  const void *row(int h, int64_t slot) const {
    return static_cast<const char *>(data) + size_t(offset(h, slot)) * elem_bytes();
  }
  // Whether the rows of consecutive slots of a head lie dim elements apart (a head-major
  // contiguous cache), so runs of them can be scored in place.
  bool rows_contiguous(int64_t dim) const { return !pages && token_stride == dim; }
};

}  // namespace sa
