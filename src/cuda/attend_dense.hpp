// Dense decode on tensor cores: sa_attend without index lists, the call a decode step makes
// over the whole cache, for the shapes attend_dense.cu takes (the others keep decode_kernel).
#pragma once

#include <cstdint>

#include "sparseattn_plugin.h"

namespace sacuda {

// Whether attend_dense takes the call: no index lists or per-KV-head positions, queries in the
// keys' dtype, head dimension 64 or 128 (attend_decode.cu's checks passed).
bool dense_fits(const sa_plugin_attend_args &a, const int64_t *head_positions);

// F32 [n_q][H_q] log-sum-exp (natural log) with element strides s0, s1.
struct LseView {
  float *lse;
  int64_t s0, s1;
};

// Enqueues the call on a.stream; owner: whose stream buffers. need_lse (slot mass reads it):
// without a.lse the log-sum-exp goes to the stream's scratch. Returns where it was written
// (lse null: nowhere).
LseView attend_dense(const sa_plugin_attend_args &a, const void *owner, bool need_lse);

}  // namespace sacuda
