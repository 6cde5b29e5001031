// Exact softmax attention over all keys (dense) or gathered index lists (sparse).
#pragma once

#include <cstdint>

#include "core/context.hpp"
#include "core/tensor_view.hpp"

namespace sa {

struct AttendProblem {
  TensorView q;        // [n_q, H_q, D]
  TensorView k, v;     // [n_kv, H_kv, D]
  const TensorView *indices = nullptr;  // [n_q, H_kv or H_q, width] i32, validated in range
  // Instead of indices: one list per query, shared by all its heads, of its own length (a
  // sequence's slots of a paged cache in token order, for dense attention over it): query i
  // reads list_len[i] entries at list_data + list_start[i]. Without key_positions the lists
  // already stop at the causal limit, so no entry is masked by position. shared_lists says
  // they are given: with every list empty list_data may be NULL (an empty vector's data()).
  bool shared_lists = false;
  const int32_t *list_data = nullptr;
  const int64_t *list_start = nullptr, *list_len = nullptr;
  bool per_query_head = false;          // indices hold one list per query head
  float scale = 0.f;                    // > 0
  bool causal = false;
  const int64_t *query_positions = nullptr;
  const int64_t *key_positions = nullptr;
  // Nonzero: key_positions holds one row of n_kv positions per KV head, this many apart.
  int64_t key_pos_head_stride = 0;
  TensorView out;                       // [n_q, H_q, D]
  const TensorView *lse = nullptr;      // [n_q, H_q] f32
  const TensorView *slot_mass = nullptr;  // [H_kv, n_kv] or [n_kv] f32: accumulated probabilities
  float mass_decay = 1.f;               // in [0, 1]
};

// Runs the problem on ctx's threads and kernels. Allocates its scratch before any parallel
// region, so the only failure is SA_ERR_OUT_OF_MEMORY, thrown before output is written.
// With n_q = 0 only the slot_mass decay applies.
void attend(const sa_context &ctx, const AttendProblem &p);

}  // namespace sa
