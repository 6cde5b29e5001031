// sa_cache_evict on device tensors: the CPU policy (cache/evict.cpp) as kernels and two stable
// radix sorts, so that a host calling it every step at a large cache does not copy the scores.
#pragma once

#include "sparseattn_plugin.h"

namespace sacuda {

// Fills a's outputs (refused, refused_slot, refused_value, n_freed); writes a.freed only when
// nothing is refused. Waits for the stream twice (the counts, then the outcome).
void evict(sa_plugin_evict_args &a);

// The same policy for each of a.heads KV heads alone (per-KV-head eviction): a's head fields
// give each head's rows; nothing is written unless every head passes, and a refusal names the
// first failing head. Waits for the stream twice for all heads together.
void evict_heads(sa_plugin_evict_args &a);

}  // namespace sacuda
