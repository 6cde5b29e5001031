// sa_attend_options.slot_mass on the device: decay the buffer, then add the softmax probability
// every key row received, from the log-sum-exp the attention kernel wrote.
#pragma once

#include <cuda_runtime.h>

#include "sparseattn_plugin.h"

namespace sacuda {

// a: the attention call (its q, k, indices, causal, scale, slot_mass, mass_decay); lse: F32
// [n_q][H_q] natural-log denominators with element strides l_s0, l_s1, written by the
// attention kernel earlier on `stream`. head_pos: per-KV-head positions [H_kv][n_kv] (or
// null: row r holds position r), empty (negative) rows get nothing; max_pos1: their largest + 1
// on the device, the causal queries' reference (needed when causal with head_pos). Dense: each mass element is summed by one warp, in
// query then head order. Sparse: entries add with atomics, so sums may differ in the last bits
// from run to run (the order of additions is not fixed).
void accumulate_slot_mass(const sa_plugin_attend_args &a, const float *lse, int64_t l_s0, int64_t l_s1,
                          const int64_t *head_pos, const unsigned long long *max_pos1, cudaStream_t stream);

}  // namespace sacuda
