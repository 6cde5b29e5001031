// Accumulated attention per key row (sa_attend_options.slot_mass): the H2O-style score that
// sa_cache_evict ranks slots by. Runs after the softmax pass, once the log-sum-exp of every
// (query, head) is known, and adds 2^(s - lse2) per key: from the scores the softmax pass
// kept (sparse lists), or else from a second, lighter pass that recomputes them (K only). Every output element is summed by one task in a fixed order, so the
// sums do not depend on the thread count and no two threads add to the same float.
#pragma once

#include <cstdint>
#include <vector>

#include "core/context.hpp"
#include "core/tensor_view.hpp"

namespace sa {

// The attention problem as the driver resolved it.
struct MassLayout {
  TensorView q;                 // [n_q, H_q, D]
  float qscale = 0.f;           // scale * log2(e): scores in base 2, as in the softmax pass
  int64_t n_kv = 0, H_kv = 0;
  sa_dtype kv_dtype = SA_DTYPE_F32;
  const char *k_base = nullptr; // K with a unit stride along D
  int64_t k_token_stride = 0, k_head_stride = 0;  // elements
  // Sparse lists [n_q][lists][width], unit stride along width, when `sparse` (idx may then be
  // NULL when every list is empty); dense over the n_kv rows otherwise.
  bool sparse = false;
  const int32_t *idx = nullptr;
  int64_t idx_s0 = 0, idx_s1 = 0, width = 0, lists = 0;
  bool per_query_head = false;  // lists are per query head
  // Shared lists (AttendProblem::list_data): query i's list, for every head, is list_len[i]
  // entries at idx + list_start[i]; width is the longest.
  const int64_t *list_start = nullptr, *list_len = nullptr;
  const int64_t *key_positions = nullptr;
  int64_t key_pos_head_stride = 0;  // nonzero: a row of positions per KV head
};

class SlotMass {
 public:
  // Allocates every buffer the pass needs, so that it cannot fail once outputs are written.
  // pos_limits: the causal limit of each query (INT64_MAX when not causal).
  SlotMass(const MassLayout &layout, std::vector<int64_t> pos_limits,
           const TensorView &mass, float decay);

  // [n_q][H_q]: the base-2 log of each softmax denominator (-inf: no visible key), filled by
  // the softmax pass before accumulate().
  float *lse2() { return lse2_.data(); }

  // mass = decay * mass + the probabilities of this call. entry_scores (sparse lists only,
  // or nullptr): the softmax pass's base-2 scores, [unit = query * lists + list][head of the
  // list][width], -inf where it skipped the entry.
  void accumulate(const sa_context &ctx, const float *entry_scores = nullptr);

 private:
  int64_t mass_rows() const { return mass_.rank == 2 ? mass_.shape[0] : 1; }
  float *target(int64_t r);  // row r of the sums: the caller's buffer or the packed scratch
  void fold(const sa_context &ctx, int64_t i, int64_t kvh, int64_t h_begin, int64_t h_end, RowSet rs,
            float *out);
  void dense(const sa_context &ctx);
  void sparse(const sa_context &ctx, const float *entry_scores);

  MassLayout layout_;
  std::vector<int64_t> pos_limits_;
  TensorView mass_;
  float decay_;
  bool direct_;                 // the caller's rows have a unit stride: add into them in place
  std::vector<float> lse2_;
  std::vector<float> packed_;   // [rows][n_kv] when not direct
  std::vector<float> entry_mass_;  // sparse: a chunk of units' per-entry probabilities
  int64_t chunk_units_ = 0;
  std::vector<float> scaled_q_;  // [n_q][H_q][D]: q * scale * log2(e)
  int64_t D_ = 0, G_ = 1;
};

}  // namespace sa
