// Dense decode on tensor cores: sa_attend without index lists, the call a decode step makes
// over the whole cache, for the shapes attend_dense.cu takes (the others keep decode_kernel).
#pragma once

#include <cstdint>

#include "sparseattn_plugin.h"

namespace sacuda {

// Whether attend_dense takes the call: no index lists, slot mass or per-KV-head positions,
// queries in the keys' dtype, head dimension 64 or 128 (attend_decode.cu's checks passed).
bool dense_fits(const sa_plugin_attend_args &a, bool slot_mass, const int64_t *head_positions);

// Enqueues the call on a.stream; owner: whose stream buffers.
void attend_dense(const sa_plugin_attend_args &a, const void *owner);

}  // namespace sacuda
