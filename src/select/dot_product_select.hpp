// Selection by attention probability: every visible key of a KeyStore (or, for a store without
// rows, of the request's host keys) scored against the queries, softmax per query head, ranked by the list's summed probability. The engine of the
// exact selector (native keys) and of the learned selector (keys and queries mapped into a
// smaller search space, optionally followed by an exact rescoring of the best candidates).
// Forced slots, visibility, query loading and scoring are candidate_rescore's shared pieces.
#pragma once

#include <cstdint>
#include <functional>

#include "select/candidate_rescore.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

// Writes query i's heads [l.q_head0, l.q_head0 + l.q_heads) in the key store's space,
// multiplied by req.scale * log2(e) (base-2 logits): out[g * dim + d]. load_list_queries is
// the map of the native space.
using QueryMap = std::function<void(int64_t i, const SelectionList &l, float *out)>;

// Second stage: the best `candidates` slots of each list (by probability in the scored space;
// forced slots apart) rescored with rescore_candidates against `native` keys, which hold the
// same slots and positions. candidates <= 0 or native == nullptr: no second stage. borrowed:
// native gives the positions only, the rows are the request's host keys.
struct RescoreStage {
  const KeyStore *native = nullptr;
  int64_t candidates = 0;
  bool borrowed = false;
};

void select_by_dot_product(const sa_context &ctx, const SelectRequest &req, const KeyStore &keys,
                           const QueryMap &map_query, const RescoreStage &rescore = RescoreStage());

// The exact selection over a KeyStore (its rows, or the request's host keys when it keeps none).
void select_exactly(const sa_context &ctx, const SelectRequest &req, const KeyStore &keys);

// Whether the page, LSH and HNSW selectors select a request exactly: a prompt's queries (at least
// kPrefillExactQueries) over at most kPrefillExactKeys keys. The exact pass scores a block of
// queries with one GEMM, which on a CPU costs less than their per-query search there, and its
// selection is their quality ceiling. Measured (bench_select select/KIND/prefill4k_k128, 4096
// queries over 4096 f16 keys, H_q 32, H_kv 8, D 128, K 128, 2 loaded cores): page (refine) 20.5
// s, LSH 26.3 s, HNSW 58.2 s with their own search; exact 26 s before its GEMM pass was limited to
// the causal prefix, about 2.5x less after.
constexpr int64_t kPrefillExactQueries = 64, kPrefillExactKeys = 16384;
bool prefill_selects_exactly(const SelectRequest &req, int64_t n_keys);

}  // namespace sa
