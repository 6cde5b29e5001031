// Device index options shared by the CUDA tests and bench/cuda (no GoogleTest here, so the
// benchmark includes it too): bf16 keys, whole pages (refine = 0, the only kind of page a
// device index keeps; exact indexes ignore it).
#pragma once

#include "sparseattn.h"

// page > 0: slots per page (SA_SELECTOR_PAGE); 0 keeps the default.
inline sa_index_options device_index_options(sa_selector_kind kind, int num_kv_heads, int head_dim, int page = 0) {
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = kind;
  io.num_kv_heads = num_kv_heads;
  io.head_dim = head_dim;
  io.dtype = SA_DTYPE_BF16;
  if (page > 0) io.page.page_size = page;
  io.page.refine = 0;
  return io;
}
